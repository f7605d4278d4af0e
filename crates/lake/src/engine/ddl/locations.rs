//! Where SQL may create or point tables: the allowed roots (`--allow-location`, the data
//! directory), checked lexically before any store is touched.

use super::*;

impl Engine {
    /// Checks that SQL may name `location`: it must be under one of the allowed roots.
    pub fn check_allowed(&self, location: &str) -> Result<Location> {
        self.lexically_allowed(location)?;
        // Then the real location (symbolic links resolved) must be allowed too.
        let parsed = Location::parse(location)?;
        if !self.is_allowed(parsed.url.as_str()) {
            return Err(self.refuse(location));
        }
        Ok(parsed)
    }

    pub(super) fn is_allowed(&self, url: &str) -> bool {
        self.allowed_locations
            .iter()
            .any(|root| url.starts_with(root.as_str()))
    }

    pub(super) fn refuse(&self, location: &str) -> Error {
        Error::InvalidLocation {
            location: location.to_string(),
            reason: format!(
                "not under a location SQL may use ({}); start the server with \
                 --allow-location to add one",
                if self.allowed_locations.is_empty() {
                    "none configured".to_string()
                } else {
                    self.allowed_locations.join(", ")
                }
            ),
        }
    }

    /// Whether `location` as written is under a location SQL may use, decided before
    /// anything touches the disk (so SQL cannot probe which server paths exist): no dot
    /// segments, no encoded separators or dots, and the text itself under an allowed root.
    pub(crate) fn lexically_allowed(&self, location: &str) -> Result<()> {
        let refuse = || self.refuse(location);
        // First a lexical check, before anything touches the disk (so SQL cannot probe
        // which server paths exist): no dot segments, no encoded separators or dots, and
        // the text itself must be under an allowed root.
        let lowered = location.to_ascii_lowercase();
        if ["%2f", "%5c", "%2e"].iter().any(|e| lowered.contains(e))
            || location
                .split(['/', '\\'])
                .any(|seg| seg == ".." || seg == ".")
        {
            return Err(refuse());
        }
        let lexical = if location.contains("://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!("file://{location}")
        } else {
            return Err(Error::InvalidLocation {
                location: location.to_string(),
                reason: "use an absolute path or a URL".into(),
            });
        };
        let lexical = if lexical.ends_with('/') {
            lexical
        } else {
            format!("{lexical}/")
        };
        if !self.is_allowed(&lexical) {
            return Err(refuse());
        }
        Ok(())
    }
}
