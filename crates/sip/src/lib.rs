//! Wire-exact SIP messages: parse, inspect, edit and serialise without I/O.
