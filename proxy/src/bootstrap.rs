//! Loading a bootstrap as Envoy does.
//!
//! - `-c/--config-path`: the format follows the file name, case-insensitively, as in Envoy:
//!   `.yaml`/`.yml` is YAML, `.pb` binary protobuf, `.pb_text` text-format protobuf, anything
//!   else JSON (Envoy's JSON parser, so a trailing comma is fine, a YAML file named `.json`
//!   is not).
//! - `--config-yaml`: YAML (or JSON) merged into the file with protobuf `MergeFrom`
//!   semantics: scalars override, repeated fields append, messages merge. Or used alone.
//! - Then the merged bootstrap is checked as Envoy checks it after parsing
//!   ([`proto::validate`]): Anys resolve, TypedStructs convert, Durations are in range.
//! - `--service-cluster`, `--service-node`, `--service-zone` override `node.cluster`,
//!   `node.id` and `node.locality.zone`.
//!
//! Unknown fields fail with their path unless `--allow-unknown-static-fields` is given; then
//! they are skipped, including inside `typed_config`s and TypedStructs (Envoy does the same),
//! and named in one warning. Unknown `@type`s fail either way, as in Envoy.
//!
//! This is the proto-level check only; `--mode validate` adds the server's conversion of
//! the static listeners and clusters ([`crate::server::check_static`]).

use std::io::Write;
use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::config::bootstrap::v3::Bootstrap;
use envoy_types::pb::envoy::config::core::v3::{Locality, Node};
use prost::Message as _;

use crate::proto::{self, Decoded, Format, Ignored, UnknownFields};

/// Where the bootstrap comes from and how to read it: the bootstrap-related flags.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `-c/--config-path`.
    pub config_path: Option<PathBuf>,
    /// `--config-yaml`.
    pub config_yaml: Option<String>,
    /// `Ignore` with `--allow-unknown-static-fields`.
    pub unknown_fields: UnknownFields,
    /// `--service-cluster`, `--service-node`, `--service-zone`.
    pub node: NodeOverrides,
    /// Whether `--log-format` was given: then the bootstrap must not set
    /// `application_log_config.log_format` (Envoy refuses both).
    pub log_format_on_command_line: bool,
}

/// Values that replace the bootstrap's node identity when set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeOverrides {
    /// `--service-cluster`: `node.cluster`.
    pub cluster: Option<String>,
    /// `--service-node`: `node.id`.
    pub id: Option<String>,
    /// `--service-zone`: `node.locality.zone`.
    pub zone: Option<String>,
}

/// A loaded bootstrap.
#[derive(Clone, Debug, PartialEq)]
pub struct Loaded {
    pub bootstrap: Bootstrap,
    /// Unknown fields skipped under `--allow-unknown-static-fields` (already logged).
    pub ignored: Vec<Ignored>,
}

/// How a `--config-path` file is read, chosen by its name as Envoy does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    Json,
    Yaml,
    /// `.pb`: binary protobuf.
    Binary,
    /// `.pb_text`: text-format protobuf.
    Text,
}

/// Why the bootstrap cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no configuration: give a bootstrap file with -c/--config-path, or --config-yaml")]
    NoConfig,
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The `--config-path` file does not parse as a Bootstrap.
    #[error("{0}")]
    File(proto::Error),
    /// The `--config-yaml` text does not parse as a Bootstrap.
    #[error("--config-yaml: {0}")]
    ConfigYaml(proto::Error),
    /// It parses, but a check after parsing fails.
    #[error("{0}")]
    Invalid(proto::Error),
    #[error(
        "only one of application_log_config.log_format (in the bootstrap) or --log-format \
         can be given"
    )]
    LogFormatConflict,
}

// === impl FileFormat ===

impl FileFormat {
    /// The format Envoy reads `path` as.
    pub fn from_path(path: &Path) -> Self {
        let name = path.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".pb") {
            FileFormat::Binary
        } else if name.ends_with(".pb_text") {
            FileFormat::Text
        } else if name.ends_with(".yaml") || name.ends_with(".yml") {
            FileFormat::Yaml
        } else {
            FileFormat::Json
        }
    }
}

/// Loads, merges and checks the bootstrap, then applies the node overrides. Unknown fields
/// skipped under `--allow-unknown-static-fields` are logged in one warning.
pub fn load(config: &Config) -> Result<Loaded, Error> {
    let unknown = config.unknown_fields;
    let mut ignored = Vec::new();
    let mut bootstrap = match &config.config_path {
        Some(path) => {
            let file = read_file(path, unknown).map_err(|e| match e {
                LoadError::Read(source) => Error::Read {
                    path: path.clone(),
                    source,
                },
                LoadError::Parse(e) => Error::File(e),
            })?;
            ignored.extend(file.ignored);
            Some(file.message)
        }
        None => None,
    };
    if let Some(yaml) = &config.config_yaml {
        let overlay =
            proto::decode::<Bootstrap>(yaml, Format::Yaml, unknown).map_err(Error::ConfigYaml)?;
        ignored.extend(overlay.ignored);
        bootstrap = Some(match bootstrap {
            // Concatenated encodings decode as MergeFrom: protobuf's merge semantics exactly.
            Some(mut base) => {
                base.merge(overlay.message.encode_to_vec().as_slice())
                    .map_err(|e| {
                        Error::Invalid(proto::Error::Binary {
                            type_name: "envoy.config.bootstrap.v3.Bootstrap".into(),
                            reason: e.to_string(),
                        })
                    })?;
                base
            }
            None => overlay.message,
        });
    }
    let Some(mut bootstrap) = bootstrap else {
        return Err(Error::NoConfig);
    };
    ignored.extend(proto::validate(&bootstrap, unknown).map_err(Error::Invalid)?);
    let log_format_in_bootstrap = bootstrap
        .application_log_config
        .as_ref()
        .is_some_and(|c| c.log_format.is_some());
    if config.log_format_on_command_line && log_format_in_bootstrap {
        return Err(Error::LogFormatConflict);
    }
    apply_node_overrides(&mut bootstrap, &config.node);
    if !ignored.is_empty() {
        let list: Vec<String> = ignored.iter().map(ToString::to_string).collect();
        tracing::warn!(
            "ignoring unknown fields in the bootstrap (--allow-unknown-static-fields): {}",
            list.join("; ")
        );
    }
    Ok(Loaded { bootstrap, ignored })
}

/// `--mode validate`: loads the bootstrap, runs `check` on it (the server's conversion of
/// static resources) and reports as Envoy does. On success writes
/// `configuration '<path>' OK` to `out` and returns true; on failure logs
/// `error initializing configuration '<path>': <error>` and returns false.
pub fn validate_mode(
    config: &Config,
    check: impl FnOnce(&Bootstrap) -> Result<(), String>,
    out: &mut dyn Write,
) -> bool {
    let path = config
        .config_path
        .as_deref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    match load(config)
        .map_err(|e| e.to_string())
        .and_then(|l| check(&l.bootstrap))
    {
        Ok(()) => {
            // Nothing useful to do if stdout is gone; the exit code still says OK.
            let _ = writeln!(out, "configuration '{path}' OK");
            true
        }
        Err(e) => {
            tracing::error!("error initializing configuration '{path}': {e}");
            false
        }
    }
}

/// Why a file did not load.
enum LoadError {
    Read(std::io::Error),
    Parse(proto::Error),
}

fn read_file(path: &Path, unknown: UnknownFields) -> Result<Decoded<Bootstrap>, LoadError> {
    let format = FileFormat::from_path(path);
    if format == FileFormat::Binary {
        let bytes = std::fs::read(path).map_err(LoadError::Read)?;
        return proto::decode_binary(&bytes, unknown).map_err(LoadError::Parse);
    }
    let text = std::fs::read_to_string(path).map_err(LoadError::Read)?;
    match format {
        FileFormat::Json => proto::decode(&text, Format::Json, unknown),
        FileFormat::Yaml => proto::decode(&text, Format::Yaml, unknown),
        _ => proto::decode_text(&text).map(|message| Decoded {
            message,
            ignored: Vec::new(),
        }),
    }
    .map_err(LoadError::Parse)
}

/// What Envoy's LocalInfo does with `--service-cluster/-node/-zone`.
fn apply_node_overrides(bootstrap: &mut Bootstrap, overrides: &NodeOverrides) {
    if overrides == &NodeOverrides::default() {
        return;
    }
    let node = bootstrap.node.get_or_insert_with(Node::default);
    if let Some(cluster) = &overrides.cluster {
        node.cluster.clone_from(cluster);
    }
    if let Some(id) = &overrides.id {
        node.id.clone_from(id);
    }
    if let Some(zone) = &overrides.zone {
        node.locality
            .get_or_insert_with(Locality::default)
            .zone
            .clone_from(zone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, contents: &[u8]) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn file_config(path: PathBuf) -> Config {
        Config {
            config_path: Some(path),
            ..Config::default()
        }
    }

    const BASE: &str = r#"{
      "node": {"id": "sidecar~1.2.3.4~a~b", "cluster": "a.b"},
      "static_resources": {"clusters": [{"name": "one", "connect_timeout": "1s"}]},
      "stats_flush_interval": "5s"
    }"#;

    #[test]
    fn format_follows_the_file_name_like_envoy() {
        let cases = [
            ("envoy-rev.json", FileFormat::Json),
            ("b.YAML", FileFormat::Yaml),
            ("b.yml", FileFormat::Yaml),
            ("b.pb", FileFormat::Binary),
            ("b.pb_text", FileFormat::Text),
            ("no-extension", FileFormat::Json),
        ];
        for (name, format) in cases {
            assert_eq!(FileFormat::from_path(Path::new(name)), format, "{name}");
        }
    }

    #[test]
    fn config_yaml_merges_like_merge_from() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = file_config(write(&dir, "b.json", BASE.as_bytes()));
        config.config_yaml = Some(
            "node: {cluster: other}\nstatic_resources: {clusters: [{name: two}]}\n\
             stats_flush_interval: 10s"
                .into(),
        );
        let bootstrap = load(&config).unwrap().bootstrap;
        let node = bootstrap.node.unwrap();
        // Scalars override, untouched fields stay, repeated fields append.
        assert_eq!(
            (node.id.as_str(), node.cluster.as_str()),
            ("sidecar~1.2.3.4~a~b", "other")
        );
        let names: Vec<_> = bootstrap
            .static_resources
            .unwrap()
            .clusters
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["one", "two"]);
        assert_eq!(bootstrap.stats_flush_interval.map(|d| d.seconds), Some(10));
    }

    #[test]
    fn config_yaml_alone_is_a_bootstrap() {
        let config = Config {
            config_yaml: Some(BASE.into()),
            ..Config::default()
        };
        assert_eq!(
            load(&config).unwrap().bootstrap.node.unwrap().cluster,
            "a.b"
        );
        let err = load(&Config::default()).unwrap_err();
        assert!(matches!(err, Error::NoConfig), "{err}");
    }

    #[test]
    fn service_flags_override_the_node() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = file_config(write(&dir, "b.json", BASE.as_bytes()));
        config.node = NodeOverrides {
            cluster: Some("c".into()),
            id: Some("n".into()),
            zone: Some("z".into()),
        };
        let node = load(&config).unwrap().bootstrap.node.unwrap();
        assert_eq!((node.id.as_str(), node.cluster.as_str()), ("n", "c"));
        assert_eq!(node.locality.unwrap().zone, "z");
    }

    #[test]
    fn binary_and_text_protobuf_files_load() {
        let dir = tempfile::tempdir().unwrap();
        let json = load(&file_config(write(&dir, "b.json", BASE.as_bytes()))).unwrap();
        let pb = write(&dir, "b.pb", &json.bootstrap.encode_to_vec());
        assert_eq!(load(&file_config(pb)).unwrap().bootstrap, json.bootstrap);

        let text = write(&dir, "b.pb_text", br#"node { id: "n" cluster: "c" }"#);
        assert_eq!(
            load(&file_config(text)).unwrap().bootstrap.node.unwrap().id,
            "n"
        );

        let garbage = write(&dir, "bad.pb", b"\xff\xff\xff");
        let err = load(&file_config(garbage)).unwrap_err();
        assert!(err.to_string().contains("invalid binary protobuf"), "{err}");
    }

    #[test]
    fn unreadable_and_unparsable_files_say_so() {
        let err = load(&file_config("/nonexistent/envoy-rev.json".into())).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read /nonexistent/envoy-rev.json"),
            "{err}"
        );

        let dir = tempfile::tempdir().unwrap();
        let yaml_named_json = write(&dir, "b.json", b"node:\n  id: n\n");
        let err = load(&file_config(yaml_named_json)).unwrap_err();
        assert!(
            err.to_string().starts_with("invalid JSON at line 1"),
            "{err}"
        );
    }

    #[test]
    fn checks_after_parsing_reject_negative_durations() {
        let config = Config {
            config_yaml: Some("stats_flush_interval: -5s".into()),
            ..Config::default()
        };
        let err = load(&config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "stats_flush_interval: Duration \"-5s\" is negative; durations must be >= 0"
        );
    }

    #[test]
    fn unknown_fields_fail_or_are_skipped_with_the_flag() {
        let yaml = "node: {id: node1, colour: blue}\nadmin: {profile_path: /tmp/p, bogus: 1}";
        let mut config = Config {
            config_yaml: Some(yaml.into()),
            ..Config::default()
        };
        let err = load(&config).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--config-yaml: node.colour: unknown field \"colour\" in envoy.config.core.v3.Node"
        );
        config.unknown_fields = UnknownFields::Ignore;
        let loaded = load(&config).unwrap();
        let paths: Vec<String> = loaded.ignored.iter().map(|i| i.path.to_string()).collect();
        assert_eq!(paths, ["node.colour", "admin.bogus"]);
        assert_eq!(loaded.bootstrap.admin.unwrap().profile_path, "/tmp/p");
    }

    #[test]
    fn log_format_in_both_places_is_refused_like_envoy() {
        let mut config = Config {
            config_yaml: Some("application_log_config: {log_format: {text_format: '%v'}}".into()),
            ..Config::default()
        };
        assert!(load(&config).is_ok());
        config.log_format_on_command_line = true;
        assert!(matches!(load(&config), Err(Error::LogFormatConflict)));
    }

    #[test]
    fn validate_mode_prints_what_envoy_prints() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "b.json", BASE.as_bytes());
        let mut out = Vec::new();
        assert!(validate_mode(
            &file_config(path.clone()),
            |_| Ok(()),
            &mut out
        ));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!("configuration '{}' OK\n", path.display())
        );

        let bad = write(&dir, "bad.json", b"{\"nope\": 1}");
        let mut out = Vec::new();
        assert!(!validate_mode(&file_config(bad), |_| Ok(()), &mut out));
        assert!(out.is_empty());
    }
}
