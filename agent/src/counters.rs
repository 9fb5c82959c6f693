//! The counters every step keeps beside its histograms, defined once. The
//! agent's recorder counts into [`StepCounters`], the wire carries it as
//! fields of `StepInterval` (fleet.proto), and the controller's tallies and
//! the summary's entries add and show the same struct: a new counter is a
//! line of [`step_counters!`] below and a field in fleet.proto.

use loadfleet_proto::v1;

/// Defines [`StepCounters`] from one list of counters, each with its doc;
/// each name is also the name of its field in `v1::StepInterval` and in
/// the summary's JSON.
macro_rules! step_counters {
    ($( $(#[$doc:meta])* $name:ident, )*) => {
        /// A step's counts beyond its requests, errors and latencies.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub struct StepCounters {
            $( $(#[$doc])* #[serde(default)] pub $name: u64, )*
        }

        impl StepCounters {
            /// Adds `other` into these (saturating: a hostile agent's
            /// report cannot wrap a sum).
            #[inline]
            pub fn add(&mut self, other: &StepCounters) {
                $( self.$name = self.$name.saturating_add(other.$name); )*
            }

            /// The counters of a step's interval report.
            pub fn of_wire(s: &v1::StepInterval) -> StepCounters {
                StepCounters { $( $name: s.$name, )* }
            }

            /// Writes these counters into a step's interval report.
            pub fn write_wire(&self, s: &mut v1::StepInterval) {
                $( s.$name = self.$name; )*
            }

            /// Each counter by its name, in the order defined.
            pub fn named(&self) -> [(&'static str, u64); [$(stringify!($name)),*].len()] {
                [$( (stringify!($name), self.$name), )*]
            }
        }
    };
}

step_counters! {
    /// HTTP exchanges begun: one per request, one more per redirect
    /// followed, so a step's figures reconcile with the target's log.
    exchanges,
    /// Requests sent again, once, on a new connection because the
    /// kept-alive one closed before any byte of a response (a server's
    /// idle timeout racing the request). Not errors; each attempt is one of
    /// `exchanges`.
    retries,
    /// Response bytes read (heads and bodies as they came, after TLS).
    bytes_received,
    /// Bytes of the bodies that checks and extractions read, after
    /// decoding (bodies nobody reads are not decoded, so not counted).
    bytes_decoded,
    /// Responses that came over HTTP/2; the others came over HTTP/1.1.
    http2_responses,
    /// Loops (`while`, or `during` with `max_loops`) of this group that
    /// ended at their bound of passes while their condition still held.
    loop_bound_hits,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_go_through_the_wire_and_add_up() {
        let a = StepCounters {
            exchanges: 3,
            retries: 1,
            bytes_received: 900,
            bytes_decoded: 2_000,
            http2_responses: 2,
            loop_bound_hits: 0,
        };
        let mut wire = v1::StepInterval::default();
        a.write_wire(&mut wire);
        assert_eq!(wire.exchanges, 3);
        assert_eq!(wire.http2_responses, 2);
        let mut b = StepCounters::of_wire(&wire);
        assert_eq!(b, a);
        b.add(&a);
        assert_eq!(b.bytes_received, 1_800);
        b.add(&StepCounters {
            retries: u64::MAX,
            ..StepCounters::default()
        });
        assert_eq!(b.retries, u64::MAX, "saturates");
        assert_eq!(a.named()[0], ("exchanges", 3));
        assert_eq!(a.named().len(), 6);
    }
}
