//! What a pool of sagw gateways shares (docs/pools.md): the pool key and the keys derived from
//! it ([`PoolKey`]), and the sealing of SA records and snapshots ([`Sealer`]).

pub mod keys;
pub mod seal;

pub use keys::{KeyError, PoolKey};
pub use seal::{SealError, Sealer};
