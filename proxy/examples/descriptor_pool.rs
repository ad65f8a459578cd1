//! Prints the size of the compiled-in descriptor set and how long decoding it takes, the cost
//! every process pays once on first use of `proxy::proto`:
//!
//! ```sh
//! cargo run -p proxy --example descriptor_pool            # debug
//! cargo run -p proxy --example descriptor_pool --release  # release
//! ```
#![forbid(unsafe_code)]

use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let start = Instant::now();
    let pool = prost_reflect::DescriptorPool::decode(proxy::proto::DESCRIPTOR_SET)?;
    let elapsed = start.elapsed();
    println!(
        "descriptor set: {} bytes, {} files, {} messages; decoded in {:.1} ms",
        proxy::proto::DESCRIPTOR_SET.len(),
        pool.files().len(),
        pool.all_messages().len(),
        elapsed.as_secs_f64() * 1000.0
    );
    Ok(())
}
