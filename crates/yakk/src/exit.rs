//! Exit codes, and turning any error into one line for the user (never a stack trace).

use yakk_session::SessionError;

/// Exit codes other than 0 (success); documented in the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    Error = 1,
    Usage = 2,
    WrongPassword = 3,
    PeerGone = 4,
    NoSuchRoom = 5,
    SignalUnreachable = 6,
    NoPath = 7,
    V1Refused = 8,
    Refused = 9,
    /// Ctrl-C: the user stopped the command (128 + SIGINT, as a shell reports a process that
    /// Ctrl-C ended). Printed as a `stopped` event, not as an error.
    Interrupted = 130,
}

/// An error that knows its exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: ExitCode,
    pub message: String,
}

impl Failure {
    pub fn new(code: ExitCode, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(ExitCode::Usage, message)
    }
    /// Ctrl-C stopped the command; `message` is shown as it is ("Stopped.").
    pub fn stopped(message: impl Into<String>) -> Self {
        Failure::new(ExitCode::Interrupted, message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

fn code_of(e: &SessionError) -> ExitCode {
    match e {
        SessionError::WrongPassword | SessionError::Refused(_) | SessionError::RoomFull => {
            ExitCode::WrongPassword
        }
        SessionError::PeerGone(_) | SessionError::HandshakeTimeout => ExitCode::PeerGone,
        SessionError::NoSuchRoom(_) => ExitCode::NoSuchRoom,
        SessionError::SignalUnreachable(_) | SessionError::SignalClosed(_) => {
            ExitCode::SignalUnreachable
        }
        SessionError::BadSignalUrl(_) => ExitCode::Usage,
        SessionError::NoPath => ExitCode::NoPath,
        SessionError::V1Refused => ExitCode::V1Refused,
        _ => ExitCode::Error,
    }
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Self {
        Failure::new(code_of(&e), e.to_string())
    }
}

/// The exit code and message for any error that reached `main`.
pub fn classify(e: &anyhow::Error) -> (ExitCode, String) {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return (f.code, format_chain(e));
        }
        if let Some(s) = cause.downcast_ref::<SessionError>() {
            return (code_of(s), format_chain(e));
        }
        // `yakk signal`: a flag it cannot use, or a port it cannot listen on, as for the
        // other commands.
        if cause.downcast_ref::<yakk_signal::ConfigError>().is_some()
            || matches!(
                cause.downcast_ref::<yakk_signal::ServerError>(),
                Some(
                    yakk_signal::ServerError::Bind { .. } | yakk_signal::ServerError::Relay { .. }
                )
            )
        {
            return (ExitCode::Usage, format_chain(e));
        }
    }
    (ExitCode::Error, format_chain(e))
}

/// The error and its causes on one line, each said once.
fn format_chain(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}
