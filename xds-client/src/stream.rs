//! Pieces shared by the SotW and delta streams: node placement, NACK payloads, logging, and
//! how a stream ends.

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::rpc::Status as RpcStatus;

use crate::config::ClientConfig;
use crate::resource::ResourceType;
use crate::state::Verdict;
use crate::transport::{TransportError, error_chain};

/// gRPC code `INTERNAL`, which Envoy puts in every NACK's `error_detail`.
const GRPC_INTERNAL: i32 = 13;

/// Puts the node in the right requests: all of them, or only the first of each stream.
#[derive(Debug)]
pub(crate) struct NodeSender {
    node: Node,
    first_only: bool,
    sent: bool,
}

/// How a stream (or the attempt to open one) ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// The channel could not be opened.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The server refused the RPC or ended the stream with an error status (including a
    /// response larger than `max_message_size`).
    #[error("the xDS stream failed: {code:?}: {message}")]
    Status {
        /// gRPC status code.
        code: tonic::Code,
        /// Message and its causes.
        message: String,
    },
    /// The server closed the stream cleanly (OK status); Envoy reconnects at once.
    #[error("the server closed the xDS stream")]
    Closed,
}

// === impl NodeSender ===

impl NodeSender {
    pub(crate) fn new(config: &ClientConfig) -> Self {
        Self {
            node: config.node.clone(),
            first_only: config.set_node_on_first_message_only,
            sent: false,
        }
    }

    /// The node for the next request on this stream, if it carries one.
    pub(crate) fn next(&mut self) -> Option<Node> {
        let send = !self.first_only || !self.sent;
        self.sent = true;
        send.then(|| self.node.clone())
    }
}

// === impl StreamError ===

impl StreamError {
    pub(crate) fn from_status(status: &tonic::Status) -> Self {
        StreamError::Status {
            code: status.code(),
            message: error_chain(status),
        }
    }
}

/// The `error_detail` of a NACK.
pub(crate) fn error_detail(message: String) -> RpcStatus {
    RpcStatus {
        code: GRPC_INTERNAL,
        message,
        details: Vec::new(),
    }
}

pub(crate) fn log_verdict(
    resource_type: ResourceType,
    version_info: &str,
    nonce: &str,
    verdict: &Verdict,
) {
    match verdict {
        Verdict::Ack => {
            tracing::debug!(%resource_type, %version_info, %nonce, "update accepted")
        }
        Verdict::Nack(reason) => {
            tracing::warn!(%resource_type, %version_info, %nonce, %reason, "update rejected")
        }
    }
}
