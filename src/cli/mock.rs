//! `tailor mock-upstream`: the simulated OpenAI alone.

use std::net::SocketAddr;

use anyhow::Result;
use tailor::{mock, server};

use super::common::runtime;

pub fn run(listen: SocketAddr) -> Result<()> {
    runtime(None)?.block_on(async move {
        let sim = mock::start(listen, false).await?;
        out!("simulated OpenAI listening on http://{}/v1", sim.addr);
        server::shutdown_signal().await;
        Ok(())
    })
}
