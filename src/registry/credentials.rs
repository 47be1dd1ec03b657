//! Registry logins for the OCI backend: `HOIST_REGISTRY_USER` and
//! `HOIST_REGISTRY_PASSWORD`, else the Docker config.
//! (Placeholder: a helper session is writing this module.)

use super::Login;
use crate::error::Result;

/// The login for a registry host, if any is configured.
pub fn login_for(host: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<Login>> {
    let _ = host;
    match (env("HOIST_REGISTRY_USER"), env("HOIST_REGISTRY_PASSWORD")) {
        (Some(username), Some(password)) => Ok(Some(Login {
            username,
            password: crate::secret::Secret::new(password),
        })),
        _ => Ok(None),
    }
}
