//! Operator client.

fn main() {}
