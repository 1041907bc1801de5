//! `tailor mock-upstream`: the simulated OpenAI alone.

use std::net::SocketAddr;

use anyhow::Result;
use tailor::{mock, server};

use super::common::runtime;

pub fn run(listen: SocketAddr) -> Result<()> {
    runtime(None)?.block_on(async move {
        let sim = mock::start(listen, false).await?;
        out!("simulated OpenAI listening on http://{}/v1", sim.addr);
        // the line above is what scripts wait for; this one is for people
        out!("like OpenAI it wants a key: any will do (`api_key_env:` set to anything); none gets 401");
        server::shutdown_signal().await;
        Ok(())
    })
}
