//! The OCI distribution API over HTTP(S).
//! (Placeholder: a helper session is writing this module.)

use super::retry::Retries;
use super::{Login, Manifest, Missing, PushAuth, Target};
use crate::error::{Error, Result};

pub struct Oci {
    target: Target,
    login: Option<Login>,
    retries: Retries,
}

impl Oci {
    pub fn connect(target: &Target, env: &dyn Fn(&str) -> Option<String>) -> Result<Oci> {
        Ok(Oci {
            target: target.clone(),
            login: super::credentials::login_for(&target.host, env)?,
            retries: Retries::default(),
        })
    }

    pub async fn push_auth(&self) -> Result<PushAuth> {
        Ok(PushAuth {
            server: self.target.host.clone(),
            login: self.login.clone(),
        })
    }

    pub async fn ensure_repository(
        &self,
        _repository: &str,
        _missing: Missing,
    ) -> Result<Option<String>> {
        Ok(None)
    }

    pub async fn manifest(&self, _repository: &str, _tag: &str) -> Result<Option<Manifest>> {
        Err(Error::failed("OCI manifest: not written yet"))
    }

    pub async fn put_manifest(
        &self,
        _repository: &str,
        _tag: &str,
        _manifest: &Manifest,
    ) -> Result<()> {
        Err(Error::failed("OCI put: not written yet"))
    }

    pub async fn revision(
        &self,
        _repository: &str,
        _manifest: &Manifest,
    ) -> Result<Option<String>> {
        Err(Error::failed("OCI revision: not written yet"))
    }

    pub fn retries(&self) -> u32 {
        self.retries.count()
    }
}
