//! MS-SIPAE security core.
