//! What both programs (`hmonitor` and `hmonitor-hub`) need that is not the wire contract: who
//! may connect ([`allow`]), who may ask ([`auth`]), the value syntax of flags, environment and
//! files ([`parse`]), what a free GPU is ([`free`]), and the frame around `main` ([`run`]: logging, exit codes, the stop
//! signal). No networking protocol, no clap, no TLS.

pub mod allow;
pub mod auth;
pub mod free;
pub mod parse;
pub mod run;
