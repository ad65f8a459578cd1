#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The deployment artefacts (deploy/, the Dockerfile) checked as a user would use them: the
//! example bootstraps loaded and run with real traffic, the systemd units verified and run,
//! the image build file and the Kubernetes manifests checked against what they refer to.

mod common;
mod docker;
mod docs;
mod examples;
mod kubernetes;
mod systemd;
