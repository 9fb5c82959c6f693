//! Built-in variables: `${__user}`, `${__iteration}`, `${__agent}`,
//! `${__region}`, `${__counter}`, `${__fleet_counter}`, `${__random(A,B)}`,
//! `${__uuid}`, `${__time}` and `${__time(FORMAT)}`. Each is an ordinary
//! variable slot that the engine fills: the user's and iteration's numbers
//! when an iteration starts, the others each time a step (or a condition,
//! or a `set`) that reads them runs, so a step that reads none costs
//! nothing.

use std::fmt::Write as _;

use crate::rng::Rng;

/// One built-in variable.
#[derive(Debug, Clone)]
pub enum Builtin {
    /// The user's number in the whole fleet, from 1 (the open model: the
    /// arrival's number).
    User,
    /// The user's iteration, from 1.
    Iteration,
    Agent,
    Region,
    /// 1, 2, 3... per user, one more each time a step reads it.
    Counter,
    /// Unique across the fleet (each user's counter interleaved with the
    /// others'): increasing per user, not consecutive.
    FleetCounter,
    /// An integer in `lo..=hi`, uniformly.
    Random(i64, i64),
    /// A random (version 4) UUID.
    Uuid,
    /// Milliseconds since the Unix epoch.
    TimeMs,
    /// The time (UTC) in a `time` crate format description
    /// (`[year]-[month]-[day]T[hour]:[minute]:[second]`).
    Time(time::format_description::OwnedFormatItem),
}

/// What a built-in's value is made from.
pub struct Context<'a> {
    pub user: u64,
    pub iteration: u64,
    pub agent: &'a str,
    pub region: &'a str,
    pub fleet_users: u64,
    pub counter: &'a mut u64,
    pub rng: &'a mut Rng,
}

impl Builtin {
    /// The built-in `name` names: `None` when it does not begin with `__`
    /// (an ordinary variable), an error when it is no built-in.
    pub fn parse(name: &str) -> Option<Result<Builtin, String>> {
        let rest = name.strip_prefix("__")?;
        let (word, args) = match rest.split_once('(') {
            Some((w, a)) => match a.strip_suffix(')') {
                Some(a) => (w.trim(), Some(a)),
                None => return Some(Err(format!("`{name}`: expected `)` at the end"))),
            },
            None => (rest.trim(), None),
        };
        let plain = |b: Builtin| match args {
            None => Ok(b),
            Some(_) => Err(format!("`__{word}` takes no arguments")),
        };
        Some(match word {
            "user" => plain(Builtin::User),
            "iteration" => plain(Builtin::Iteration),
            "agent" => plain(Builtin::Agent),
            "region" => plain(Builtin::Region),
            "counter" => plain(Builtin::Counter),
            "fleet_counter" => plain(Builtin::FleetCounter),
            "uuid" => plain(Builtin::Uuid),
            "time" => match args {
                None => Ok(Builtin::TimeMs),
                Some(f) => time::format_description::parse_owned::<2>(f.trim())
                    .map(Builtin::Time)
                    .map_err(|e| {
                        format!(
                            "`__time({f})`: {e}; expected a format such as `[year]-[month]-[day] [hour]:[minute]:[second]`"
                        )
                    }),
            },
            "random" => {
                let bounds = args.and_then(|a| {
                    let (lo, hi) = a.split_once(',')?;
                    Some((lo.trim().parse::<i64>().ok()?, hi.trim().parse::<i64>().ok()?))
                });
                match bounds {
                    Some((lo, hi)) if lo <= hi => Ok(Builtin::Random(lo, hi)),
                    _ => Err(format!(
                        "`{name}`: expected `__random(LOW,HIGH)` with integers LOW <= HIGH"
                    )),
                }
            }
            _ => Err(format!(
                "unknown built-in `{name}`; expected one of __user, __iteration, __agent, __region, __counter, __fleet_counter, __random(LOW,HIGH), __uuid, __time, __time(FORMAT)"
            )),
        })
    }

    /// Filled once per iteration (not per use).
    pub fn per_iteration(&self) -> bool {
        matches!(
            self,
            Builtin::User | Builtin::Iteration | Builtin::Agent | Builtin::Region
        )
    }

    /// Writes the value into `out`, reusing its capacity.
    pub fn write(&self, out: &mut String, cx: &mut Context<'_>) {
        out.clear();
        match self {
            Builtin::User => {
                let _ = write!(out, "{}", cx.user + 1);
            }
            Builtin::Iteration => {
                let _ = write!(out, "{}", cx.iteration + 1);
            }
            Builtin::Agent => out.push_str(cx.agent),
            Builtin::Region => out.push_str(cx.region),
            Builtin::Counter => {
                *cx.counter += 1;
                let _ = write!(out, "{}", *cx.counter);
            }
            Builtin::FleetCounter => {
                let n = *cx.counter;
                *cx.counter += 1;
                let v = n
                    .saturating_mul(cx.fleet_users.max(1))
                    .saturating_add(cx.user + 1);
                let _ = write!(out, "{v}");
            }
            Builtin::Random(lo, hi) => {
                let span = (*hi as i128 - *lo as i128 + 1) as u128;
                let r = (cx.rng.next_u64() as u128 % span) as i128 + *lo as i128;
                let _ = write!(out, "{r}");
            }
            Builtin::Uuid => {
                let (a, b) = (cx.rng.next_u64(), cx.rng.next_u64());
                // Version 4, variant 10xx.
                let a = (a & !0xf000) | 0x4000;
                let b = (b & !(0xc << 60)) | (0x8 << 60);
                let _ = write!(
                    out,
                    "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                    a >> 32,
                    (a >> 16) & 0xffff,
                    a & 0xffff,
                    b >> 48,
                    b & 0xffff_ffff_ffff
                );
            }
            Builtin::TimeMs => {
                let ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis());
                let _ = write!(out, "{ms}");
            }
            Builtin::Time(format) => {
                let now = time::OffsetDateTime::now_utc();
                let mut bytes = std::mem::take(out).into_bytes();
                if now.format_into(&mut bytes, format).is_ok() {
                    *out = String::from_utf8(bytes).unwrap_or_default();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_ins_parse_and_write() {
        let mut rng = Rng::new(3);
        let mut counter = 0;
        let mut cx = Context {
            user: 4,
            iteration: 0,
            agent: "a1",
            region: "eu",
            fleet_users: 10,
            counter: &mut counter,
            rng: &mut rng,
        };
        let mut out = String::new();
        let w = |name: &str, cx: &mut Context<'_>, out: &mut String| {
            Builtin::parse(name).unwrap().unwrap().write(out, cx);
            out.clone()
        };
        assert_eq!(w("__user", &mut cx, &mut out), "5");
        assert_eq!(w("__iteration", &mut cx, &mut out), "1");
        assert_eq!(w("__region", &mut cx, &mut out), "eu");
        assert_eq!(w("__counter", &mut cx, &mut out), "1");
        assert_eq!(w("__counter", &mut cx, &mut out), "2");
        // Counter 2 of user 5 in a fleet of 10: 2 * 10 + 5.
        assert_eq!(w("__fleet_counter", &mut cx, &mut out), "25");
        for _ in 0..1000 {
            let v: i64 = w("__random(-2, 3)", &mut cx, &mut out).parse().unwrap();
            assert!((-2..=3).contains(&v), "{v}");
        }
        let u = w("__uuid", &mut cx, &mut out);
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        let ms: u128 = w("__time", &mut cx, &mut out).parse().unwrap();
        assert!(ms > 1_700_000_000_000);
        assert_eq!(w("__time([year])", &mut cx, &mut out).len(), 4);
        assert!(Builtin::parse("plain").is_none());
        assert!(Builtin::parse("__random(5,1)").unwrap().is_err());
        assert!(Builtin::parse("__nope").unwrap().is_err());
        assert!(Builtin::parse("__time([nope])").unwrap().is_err());
    }
}
