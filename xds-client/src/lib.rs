//! xDS client: one ADS stream to the control plane. Not built yet (see the xds-client issue).
#![forbid(unsafe_code)]
