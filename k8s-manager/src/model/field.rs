//! What the settings' fields share: a refusal that names its field, and
//! the marker a write-only field's value is shown as. Below every part of
//! the settings document ([`super::settings`], [`super::proxy`],
//! [`super::overrides`]), so that each part can refuse and hide without
//! importing the document that holds it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What a write-only value is shown as: a proxy URL's password
/// (`http://me:********@proxy.corp:3128`) and a component's variable
/// (`"GOGC": "********"`). Sent back, it keeps the value saved; it is never
/// saved itself.
pub const HIDDEN: &str = "********";

/// A setting refused: the field's path (`kubernetes.apiPort`) and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsError {
    pub field: String,
    pub message: String,
}

impl SettingsError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> SettingsError {
        SettingsError {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.field.is_empty() {
            true => f.write_str(&self.message),
            false => write!(f, "{}: {}", self.field, self.message),
        }
    }
}

impl std::error::Error for SettingsError {}
