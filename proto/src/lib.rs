//! Wire types of the loadfleet protocol, generated from
//! `proto/loadfleet/v1/fleet.proto`. Nothing else lives here.
#![forbid(unsafe_code)]

/// The revision of the fleet protocol this build speaks. Controller and
/// agents must speak the same one: fields added in a revision are ignored
/// by an older peer, which would then do less than asked without knowing
/// (revision 2: rate schedules per scenario, `Assign.open` repeated, and
/// multipart bodies).
pub const PROTOCOL: u32 = 2;

/// Version 1 of the fleet protocol.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("loadfleet.v1");
}
