//! Command-line definitions: every subcommand and flag, with its help text.

use std::net::IpAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "yakk",
    version,
    about = "Anything over WebRTC: share a TCP port or send files between two computers, peer to peer, end-to-end encrypted",
    long_about = "Anything over WebRTC: share a TCP port or send files between two computers that cannot reach each \
other directly, peer to peer and end-to-end encrypted.\n\nOne side opens a room and gets a short code; the other side \
types the code. A password-authenticated key exchange (J-PAKE) turns the code's password into a strong key, so the \
signalling server in between can neither read nor tamper with anything.",
    after_help = "Examples:\n  yakk server -p 22                 share local port 22; prints a code\n  yakk client -p 2222 CODE          reach it on localhost:2222\n  yakk filesend photo.jpg docs/     send files and folders; prints a code\n  yakk filereceive CODE             receive them\n  yakk signal                       run a signalling server on port 6006"
)]
pub struct Cli {
    /// More log output on stderr (-v info, -vv debug); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Every peer command has a fixed usage line: the one clap builds for an error lists the
/// arguments that were given, environment variables included, so `YAKK_ICE_IPS` made
/// `--ice-ip` look required.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Share a local TCP port: open a room and forward every joiner's connections to HOST:PORT
    #[command(
        visible_alias = "share",
        override_usage = "yakk server [OPTIONS] --port <PORT>"
    )]
    Server(ServerArgs),
    /// Reach a shared port: listen on a local port and carry each connection to the room's owner
    #[command(
        visible_alias = "connect",
        override_usage = "yakk client [OPTIONS] --port <PORT> [CODE]..."
    )]
    Client(ClientArgs),
    /// Send files, folders or standard input: open a room and wait for the receiver
    #[command(
        visible_alias = "send",
        override_usage = "yakk filesend [OPTIONS] <PATHS>..."
    )]
    Filesend(FilesendArgs),
    /// Receive what a sender offers
    #[command(
        visible_alias = "receive",
        override_usage = "yakk filereceive [OPTIONS] [CODE]..."
    )]
    Filereceive(FilereceiveArgs),
    /// Run a signalling server
    Signal(Box<yakk_signal::SignalArgs>),
    /// Print a shell completion script
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
}

/// Options shared by every peer command.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Signalling server (host:port means ws://host:port; wss:// works). Without it, the room
    /// owner runs one inside its own process and puts its address in the code
    #[arg(
        short,
        long,
        env = "YAKK_SIGNAL",
        value_name = "URL",
        // Shown as [env: YAKK_SIGNAL] (not with its value, which may be empty)
        hide_env_values = true
    )]
    pub signal: Option<String>,
    /// The password, instead of a generated one (owner) or the one in the code (joiner)
    #[arg(
        long = "pw",
        env = "YAKK_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<String>,
    /// Allow peers that speak only yakk/1, the original YAKK program's protocol (weaker key exchange)
    #[arg(long)]
    pub legacy: bool,
    /// Speak only yakk/1, exactly as the original program does (for interoperability testing)
    #[arg(long = "legacy-only", hide = true)]
    pub v1_only: bool,
    /// Extra STUN server (stun:host:port); repeatable
    #[arg(long, value_name = "URL")]
    pub stun: Vec<String>,
    /// Extra TURN server: turn:host:port (UDP), turn:host:port?transport=tcp or turns:host:port (TLS); repeatable; needs --turn-user and --turn-pass
    #[arg(long, value_name = "URL")]
    pub turn: Vec<String>,
    /// User name for --turn
    // Not `requires = "turn"`: the TURN server may come from the configuration file, which is
    // read after parsing (`config::check_turn` then says what is missing).
    #[arg(long, value_name = "USER")]
    pub turn_user: Option<String>,
    /// Credential for --turn
    #[arg(
        long,
        visible_alias = "turn-password",
        value_name = "PASSWORD",
        env = "YAKK_TURN_PASSWORD",
        hide_env_values = true
    )]
    pub turn_pass: Option<String>,
    /// Use only these local addresses for direct (host) candidates; repeatable
    #[arg(
        long = "ice-ip",
        env = "YAKK_ICE_IPS",
        hide_env_values = true,
        value_delimiter = ',',
        value_name = "IP"
    )]
    pub ice_ips: Vec<IpAddr>,
    /// Use only relayed paths (TURN), even where a direct one exists; needs a TURN server
    #[arg(long)]
    pub relay_only: bool,
    /// Print one JSON object per line on stdout for each event, instead of text
    #[arg(long)]
    pub json: bool,
    /// Peer connections to spread every stream over: 1-32, or auto. On long links that lose
    /// packets each connection's congestion window limits the rate, so several carry several
    /// times more. auto: 32 when the round trip to the signalling server (with the built-in
    /// one: to the owner) is 20 ms or more, else 1. The session uses the larger wish of the
    /// two sides
    #[arg(
        long,
        default_value = "auto",
        env = "YAKK_LANES",
        hide_env_values = true,
        value_name = "N|auto",
        value_parser = parse_lanes
    )]
    pub lanes: u32,
}

/// `--lanes`: a number of lanes, or `auto` (`yakk_session::LANES_AUTO`).
fn parse_lanes(s: &str) -> Result<u32, String> {
    if s.eq_ignore_ascii_case("auto") {
        return Ok(yakk_session::LANES_AUTO);
    }
    match s.parse::<u32>() {
        Ok(n) if (1..=yakk_session::MAX_LANES).contains(&n) => Ok(n),
        _ => Err(format!(
            "expected auto or a number from 1 to {}",
            yakk_session::MAX_LANES
        )),
    }
}

/// Options of the room owner.
#[derive(Args, Debug, Clone)]
pub struct OwnerOpts {
    /// Failed password attempts tolerated before the code is burned (0: one guess per code)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub allow_retries: u32,
    /// Words in the generated password
    #[arg(long, default_value_t = 2, value_name = "N", value_parser = clap::value_parser!(u8).range(1..=8))]
    pub code_length: u8,
    /// Also print the code as a QR code
    #[arg(long)]
    pub qr: bool,
}

#[derive(Args, Debug)]
pub struct ServerArgs {
    /// The local port to share
    #[arg(short, long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: u16,
    /// The host the shared port is on
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Joiners admitted at the same time or in turn (default: unlimited)
    #[arg(long, value_name = "N")]
    pub max_peers: Option<u32>,
    #[command(flatten)]
    pub owner: OwnerOpts,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct ClientArgs {
    /// The local port to listen on
    #[arg(short, long)]
    pub port: u16,
    /// The local address to listen on
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    pub bind: IpAddr,
    /// The code from the owner (or, with --pw, just the room); its words may be given apart
    /// (417 crossbow nimble); prompted for when absent
    #[arg(env = "YAKK_CODE", hide_env_values = true, value_name = "CODE")]
    pub code: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct FilesendArgs {
    /// Files and folders to send; - for standard input
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The name standard input (-) gets at the receiver [default: stdin]
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Receivers served in turn before exiting
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_peers: u32,
    #[command(flatten)]
    pub owner: OwnerOpts,
    #[command(flatten)]
    pub common: Common,
}

#[derive(Args, Debug)]
pub struct FilereceiveArgs {
    /// The code from the sender; its words may be given apart (417 crossbow nimble); prompted
    /// for when absent
    #[arg(env = "YAKK_CODE", hide_env_values = true, value_name = "CODE")]
    pub code: Vec<String>,
    /// Folder to save into
    #[arg(short, long, default_value = ".", value_name = "DIR")]
    pub output: PathBuf,
    /// Accept the offer without asking
    #[arg(short, long)]
    pub yes: bool,
    /// Write the data to standard output instead of files (a single file only)
    #[arg(long)]
    pub stdout: bool,
    /// Replace files that already exist
    #[arg(long)]
    pub overwrite: bool,
    /// Keep existing files that are identical to the offered ones (same size and hash) instead
    /// of refusing the offer; the sender then learns which files you already had
    #[arg(long)]
    pub skip_identical: bool,
    #[command(flatten)]
    pub common: Common,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_take_auto_or_a_number_in_range() {
        assert_eq!(parse_lanes("auto"), Ok(yakk_session::LANES_AUTO));
        assert_eq!(parse_lanes("AUTO"), Ok(yakk_session::LANES_AUTO));
        assert_eq!(parse_lanes("1"), Ok(1));
        assert_eq!(parse_lanes("32"), Ok(32));
        for bad in ["0", "33", "-1", "", "many"] {
            assert!(parse_lanes(bad).is_err(), "{bad:?} refused");
        }
    }
}
