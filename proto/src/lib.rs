//! Wire types of the loadfleet protocol, generated from
//! `proto/loadfleet/v1/fleet.proto`. Nothing else lives here.
#![forbid(unsafe_code)]

/// Version 1 of the fleet protocol.
pub mod v1 {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("loadfleet.v1");
}
