//! The workspace's end-to-end tests (each file beside this one is a test target, see Cargo.toml):
//! the gateway over real loopback sockets, driven by clients written independently of its code path
//! (`sagw-client`, a real baresip), in front of real servers (Kamailio as the registrar behind an
//! edge, an MIT KDC), and the recorded call flows (`flows/*.flow`) replayed byte for byte through the
//! real pipeline. Tests that need one of those programs fail under `CI=true` when it is missing;
//! `scripts/setup-debian.sh` installs them.
