//! `shopcue channels list|add|rm`: the channel registry's admin API
//! (`http::channels`) from the command line, against a running sidecar.

use std::time::Duration;

use anyhow::Context;

use crate::http::channels::ChannelView;

/// How long one request may take (a removal waits for the channel's drain).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shopcue channels list --server http://127.0.0.1:8080\n  \
    shopcue channels add news https://origin.example/news/master.m3u8 --server http://127.0.0.1:8080\n  \
    shopcue channels rm news --server http://127.0.0.1:8080\n\
The admin key comes from --key or the SHOPCUE_API_KEY variable.")]
pub struct ChannelsArgs {
    #[command(subcommand)]
    pub command: ChannelsCommand,
    /// The sidecar's base URL.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The admin key (`server.admin_key`).
    #[arg(
        long,
        global = true,
        env = "SHOPCUE_API_KEY",
        hide_env_values = true,
        default_value = ""
    )]
    pub key: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum ChannelsCommand {
    /// The channels the sidecar runs (URLs redacted).
    List {
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Add a channel, or restart one with a new URL (HLS URL, srt:// URL or file).
    Add { id: String, url: String },
    /// Stop a channel (its open cues end and are published) and forget it.
    Rm { id: String },
}

/// Run one `shopcue channels` command; prints its outcome on stdout.
pub async fn run(args: &ChannelsArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .context("HTTP client")?;
    let base = args.server.trim_end_matches('/');
    let auth = |r: reqwest::RequestBuilder| r.header("x-api-key", &args.key);
    match &args.command {
        ChannelsCommand::List { json } => {
            let r = auth(client.get(format!("{base}/v1/channels")));
            let body = send(r, "GET /v1/channels").await?;
            let list: Vec<ChannelView> =
                serde_json::from_str(&body).context("the server's answer")?;
            print_list(&list, *json)
        }
        ChannelsCommand::Add { id, url } => {
            let path = format!("/v1/channels/{id}");
            let r =
                auth(client.put(format!("{base}{path}"))).json(&serde_json::json!({ "url": url }));
            let body = send(r, &format!("PUT {path}")).await?;
            let v: ChannelView = serde_json::from_str(&body).context("the server's answer")?;
            println!("{}\t{}\t{}", v.id, v.state, v.url);
            Ok(())
        }
        ChannelsCommand::Rm { id } => {
            let path = format!("/v1/channels/{id}");
            send(
                auth(client.delete(format!("{base}{path}"))),
                &format!("DELETE {path}"),
            )
            .await?;
            println!("removed {id}");
            Ok(())
        }
    }
}

/// The answer's body when successful; otherwise an error with the status and the
/// server's message.
async fn send(request: reqwest::RequestBuilder, what: &str) -> anyhow::Result<String> {
    let response = request.send().await.with_context(|| what.to_string())?;
    let status = response.status();
    let body = response.text().await.with_context(|| what.to_string())?;
    if status.is_success() {
        return Ok(body);
    }
    let message = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or(body);
    anyhow::bail!("{what}: {status}: {message}")
}

fn print_list(list: &[ChannelView], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(list)?);
        return Ok(());
    }
    println!("ID\tSTATE\tRESTARTS\tURL");
    for c in list {
        println!("{}\t{}\t{}\t{}", c.id, c.state, c.restarts, c.url);
    }
    Ok(())
}
