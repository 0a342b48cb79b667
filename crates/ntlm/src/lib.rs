//! Connectionless NTLMv2 server side for MS-SIPAE.
