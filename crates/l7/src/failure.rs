//! Why an exchange with an endpoint failed, and what the client is told for each reason: one
//! list for both engines and the exchange, so that a failure gets the same status and text
//! whichever path met it.

use std::io;

use http::StatusCode;

use crate::request::Refusal;

/// Why an endpoint did not serve a request.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// No endpoint of the backend could be connected to.
    #[error("no endpoint could be connected to")]
    Unreachable,
    /// The connection failed before the request was written: it can go on another one.
    #[error("writing the request failed: {0}")]
    Unsent(io::Error),
    /// The endpoint closed the connection without answering.
    #[error("endpoint closed the connection without answering")]
    Closed,
    /// The answer was cut short or could not be read.
    #[error("endpoint's answer was malformed or cut short")]
    Broken,
    /// No answer within the read timeout.
    #[error("endpoint did not answer in time")]
    TimedOut,
    /// The answer's framing could be read two ways.
    #[error("endpoint's answer could be framed two ways")]
    Ambiguous,
    /// Reading the request body from the client failed.
    #[error("reading the request body from the client failed")]
    ClientBody,
    /// The client's request body was malformed.
    #[error("the request body was malformed")]
    BadBody,
    /// The client's request body passed its limit.
    #[error("the request body passed its limit")]
    TooLarge,
}

impl Failure {
    /// What the client is told: the status and its text, or a refusal after which the
    /// connection closes.
    pub(crate) fn answer(&self) -> Result<(StatusCode, &'static str), Refusal> {
        match self {
            Failure::TimedOut => Ok((StatusCode::GATEWAY_TIMEOUT, "endpoint did not answer in time\n")),
            Failure::Ambiguous => Ok((StatusCode::BAD_GATEWAY, "endpoint answered badly\n")),
            Failure::TooLarge => Ok((StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n")),
            Failure::BadBody => {
                Err(Refusal { status: StatusCode::BAD_REQUEST, why: "malformed request body" })
            }
            Failure::Unreachable
            | Failure::Unsent(_)
            | Failure::Closed
            | Failure::Broken
            | Failure::ClientBody => Ok((StatusCode::BAD_GATEWAY, "endpoint unreachable\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_has_one_answer() {
        let status = |f: Failure| f.answer().map(|(s, _)| s).unwrap_or_else(|r| r.status);
        assert_eq!(status(Failure::TimedOut), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(status(Failure::TooLarge), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(status(Failure::BadBody), StatusCode::BAD_REQUEST);
        for gateway in [Failure::Unreachable, Failure::Closed, Failure::Broken, Failure::Ambiguous] {
            assert_eq!(status(gateway), StatusCode::BAD_GATEWAY);
        }
        assert!(Failure::BadBody.answer().is_err(), "a malformed body closes the connection");
        assert_eq!(Failure::Ambiguous.answer().map(|(_, t)| t), Ok("endpoint answered badly\n"));
    }
}
