//! The agent's integration tests, in one binary: the engine against a real
//! HTTP server, and the HTTP/1.1 client against scripted bytes on a socket.

mod engine;
mod wire;
