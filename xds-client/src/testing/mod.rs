//! A scriptable, in-process ADS/SDS server for tests (feature `testing`), built on
//! envoy-types' generated server stubs. It records every request it receives (per stream) and
//! sends exactly the responses the test pushes, so a test can check the client's request
//! sequence byte for byte. It can also end streams cleanly or with an error, and be killed
//! (every connection dropped) and restarted on the same address.
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! use xds_client::testing::{XdsServer, listener, sotw_response};
//! use xds_client::ResourceType;
//!
//! let server = XdsServer::bind_tcp("127.0.0.1:0".parse()?).await?;
//! // ... start a client with `server.transport()` ...
//! let first = server.next_ads_sotw().await?;
//! assert_eq!(first.request.version_info, "");
//! server.push_ads_sotw(sotw_response(ResourceType::Listener, "1", "n1", &[listener("l")]))?;
//! # Ok(())
//! # }
//! ```

mod resources;
mod server;

pub use resources::{
    cluster, cluster_load_assignment, delta_response, listener, route_configuration, secret,
    sotw_response,
};
pub use server::{Recorded, ServerAddress, ServerError, ServerTls, XdsServer};
