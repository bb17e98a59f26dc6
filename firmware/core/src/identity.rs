//! The device's identity as it appears in topics and SenML base names.

use apr_wire::id::is_valid_id;

/// An APR id and a device id, both valid per CONTRACT §2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity<'a> {
    apr: &'a str,
    device: &'a str,
}

/// Which id of an [`Identity`] is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityError {
    /// The APR id breaks `^[a-z0-9][a-z0-9-]{0,63}$`.
    Apr,
    /// The device id breaks `^[a-z0-9][a-z0-9-]{0,63}$`.
    Device,
}

impl<'a> Identity<'a> {
    /// Checks both ids.
    pub fn new(apr: &'a str, device: &'a str) -> Result<Self, IdentityError> {
        if !is_valid_id(apr) {
            return Err(IdentityError::Apr);
        }
        if !is_valid_id(device) {
            return Err(IdentityError::Device);
        }
        Ok(Identity { apr, device })
    }

    /// APR id.
    pub fn apr(&self) -> &'a str {
        self.apr
    }

    /// Device id.
    pub fn device(&self) -> &'a str {
        self.device
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_ids_that_would_break_topics() {
        assert!(Identity::new("los-aromos", "caseta").is_ok());
        assert_eq!(
            Identity::new("Los Aromos", "caseta"),
            Err(IdentityError::Apr)
        );
        assert_eq!(Identity::new("a", "x/y"), Err(IdentityError::Device));
    }
}
