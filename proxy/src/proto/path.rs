//! Field paths: where in a document a value sits, as a user would look for it
//! (`static_resources.clusters[2].load_assignment.endpoints[0]`).

use std::fmt;

/// A path from the top of a document to one value. Fields are spelled as the document spells
/// them (snake_case or lowerCamelCase), so the user can search for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldPath(Vec<Segment>);

/// One step of a [`FieldPath`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Segment {
    /// A message field.
    Field(String),
    /// An element of a repeated field.
    Index(usize),
    /// An entry of a map field.
    Key(String),
}

// === impl FieldPath ===

impl FieldPath {
    /// The path of the whole document.
    pub fn root() -> Self {
        Self::default()
    }

    /// Whether this is the path of the whole document.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The steps, outermost first.
    pub fn segments(&self) -> &[Segment] {
        &self.0
    }

    pub(crate) fn push(&mut self, segment: Segment) {
        self.0.push(segment);
    }

    pub(crate) fn pop(&mut self) {
        self.0.pop();
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(top level)");
        }
        for (i, segment) in self.0.iter().enumerate() {
            match segment {
                Segment::Field(name) if i == 0 => f.write_str(name)?,
                Segment::Field(name) => write!(f, ".{name}")?,
                Segment::Index(index) => write!(f, "[{index}]")?,
                Segment::Key(key) => write!(f, "[{key:?}]")?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_fields_indexes_and_keys() {
        let mut path = FieldPath::root();
        assert_eq!(path.to_string(), "(top level)");
        path.push(Segment::Field("static_resources".into()));
        path.push(Segment::Field("clusters".into()));
        path.push(Segment::Index(2));
        path.push(Segment::Field("typed_extension_protocol_options".into()));
        path.push(Segment::Key("envoy.http".into()));
        path.push(Segment::Field("explicit_http_config".into()));
        assert_eq!(
            path.to_string(),
            r#"static_resources.clusters[2].typed_extension_protocol_options["envoy.http"].explicit_http_config"#
        );
    }
}
