//! `limes serve --config FILE`: the flags of `limes serve` as a TOML file.
//!
//! The file has no schema of its own: each flag `--some-flag` of a group whose `--help` heading
//! ends in `[section]` is the key `some_flag` of that section. So every flag has a key, a new
//! flag gets one without more code, and a value in the file is checked by the flag's own parser.
//! The file's settings become arguments placed before the command line's, and a flag given on
//! the command line wins (for a repeatable flag, its values replace the file's).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

use clap::{ArgAction, ArgMatches, Args, Command, parser::ValueSource};

use super::args::ServeArgs;

/// The `limes serve` command as clap sees it, with a later flag overriding an earlier one.
pub fn command() -> Command {
    ServeArgs::augment_args(Command::new("limes serve")).args_override_self(true)
}

/// A setting of the config file: a flag's id and its values.
struct Setting {
    key: String,
    values: Vec<String>,
}

/// The flags that are not settings: they say where the settings are and what to do with them.
const NOT_SETTINGS: [&str; 3] = ["config", "print_config", "help"];

/// `section.key` → the flag's id, for every setting.
fn keys(command: &Command) -> BTreeMap<String, String> {
    command
        .get_arguments()
        .filter(|a| !NOT_SETTINGS.contains(&a.get_id().as_str()))
        .filter_map(|a| {
            let section = section_of(a.get_help_heading()?)?;
            let key = a.get_long()?.replace('-', "_");
            Some((format!("{section}.{key}"), a.get_id().to_string()))
        })
        .collect()
}

/// `listen` from the heading "Listen and TLS [listen]".
fn section_of(heading: &str) -> Option<&str> {
    heading.strip_suffix(']')?.rsplit_once('[').map(|(_, s)| s)
}

/// The settings of a config file's text; an error names the file, the line and the key.
fn read(path: &Path, text: &str) -> Result<Vec<Setting>, String> {
    let at = |span: std::ops::Range<usize>| {
        format!(
            "{}:{}",
            path.display(),
            text[..span.start.min(text.len())].matches('\n').count() + 1
        )
    };
    type Section = BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>>;
    let file: BTreeMap<toml::Spanned<String>, toml::Spanned<Section>> = toml::from_str(text)
        .map_err(|e| {
            let place = e
                .span()
                .map(at)
                .unwrap_or_else(|| path.display().to_string());
            format!(
                "{place}: {} (settings belong in sections such as [listen])",
                e.message()
            )
        })?;
    let command = command();
    let known = keys(&command);
    let mut settings = Vec::new();
    for (section, table) in file {
        for (key, value) in table.into_inner() {
            let name = format!("{}.{}", section.get_ref(), key.get_ref());
            let place = at(key.span());
            let Some(id) = known.get(&name) else {
                return Err(format!(
                    "{place}: unknown key `{name}`; the keys are the flags of `limes serve --help`, in the section of their heading"
                ));
            };
            let arg = command
                .get_arguments()
                .find(|a| a.get_id() == id)
                .expect("keys come from the arguments");
            let values = match value.get_ref() {
                toml::Value::Array(items) => items.iter().map(scalar).collect(),
                other => scalar(other).map(|v| vec![v]),
            }
            .map_err(|e| format!("{place}: `{name}`: {e}"))?;
            let repeatable = matches!(arg.get_action(), ArgAction::Append);
            let values = if repeatable || values.len() < 2 {
                values
            } else {
                // A flag such as --location X,Y takes a list as one value.
                vec![values.join(",")]
            };
            // Each value alone through the flag's own parser: a bad one is reported here, with
            // its line, rather than later as a flag the operator never typed.
            let mut argv = vec![OsString::from("limes serve")];
            argv.extend(flag_args(
                arg.get_long().expect("settings are long flags"),
                &values,
            ));
            if let Err(e) = command.clone().try_get_matches_from(argv)
                && matches!(
                    e.kind(),
                    clap::error::ErrorKind::InvalidValue | clap::error::ErrorKind::ValueValidation
                )
            {
                let why = e.to_string();
                let why = why
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .trim_start_matches("error: ");
                return Err(format!("{place}: `{name}`: {why}"));
            }
            settings.push(Setting {
                key: id.clone(),
                values,
            });
        }
    }
    Ok(settings)
}

/// A TOML value as a flag's text.
fn scalar(value: &toml::Value) -> Result<String, String> {
    match value {
        toml::Value::String(s) => Ok(s.clone()),
        toml::Value::Integer(i) => Ok(i.to_string()),
        toml::Value::Float(f) => Ok(f.to_string()),
        toml::Value::Boolean(b) => Ok(b.to_string()),
        other => Err(format!(
            "expected a string, a number or a list of them, not {}",
            other.type_str()
        )),
    }
}

fn flag_args(long: &str, values: &[String]) -> Vec<OsString> {
    values
        .iter()
        .map(|v| OsString::from(format!("--{long}={v}")))
        .collect()
}

/// `limes serve`'s settings from `file` and the command line `cli` (the arguments after
/// `serve`): the file's become arguments before the command line's.
pub fn merge(file: &Path, cli: &[OsString]) -> Result<ArgMatches, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the config file {}: {e}", file.display()))?;
    let settings = read(file, &text)?;
    let command = command();
    // What the command line gives, alone: its flags may need others that the file gives.
    let given = command
        .clone()
        .ignore_errors(true)
        .try_get_matches_from(
            std::iter::once(OsString::from("limes serve")).chain(cli.iter().cloned()),
        )
        .map_err(|e| e.to_string())?;
    let mut argv = vec![OsString::from("limes serve")];
    for setting in &settings {
        let arg = command
            .get_arguments()
            .find(|a| a.get_id() == setting.key.as_str())
            .expect("settings are arguments");
        // A repeatable flag given on the command line replaces the file's list.
        if given.value_source(&setting.key) == Some(ValueSource::CommandLine) {
            continue;
        }
        argv.extend(flag_args(arg.get_long().expect("long"), &setting.values));
    }
    argv.extend(cli.iter().cloned());
    command.try_get_matches_from(argv).map_err(|e| {
        format!(
            "{} with the command line: {}",
            file.display(),
            e.to_string().trim_start_matches("error: ").trim_end()
        )
    })
}

/// The effective configuration as a config file: every setting in its section, the ones left
/// at their defaults commented out, secrets redacted.
pub fn print(matches: &ArgMatches) -> String {
    let command = command();
    let mut sections: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut order = Vec::new();
    for arg in command.get_arguments() {
        let id = arg.get_id().as_str();
        let (Some(heading), Some(long)) = (arg.get_help_heading(), arg.get_long()) else {
            continue;
        };
        let Some(section) = section_of(heading) else {
            continue;
        };
        if NOT_SETTINGS.contains(&id) {
            continue;
        }
        if !order.contains(&section) {
            order.push(section);
        }
        let key = long.replace('-', "_");
        let raw: Vec<String> = matches
            .get_raw(id)
            .map(|v| v.map(|s| s.to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        let secret = matches!(id, "nats_password" | "nats_token");
        let line = match matches.value_source(id) {
            Some(ValueSource::DefaultValue) => {
                format!("# {key} = {}  (default)", toml_value(arg, &raw))
            }
            None => format!(
                "# {key}: not set (default: {})",
                default_in_help(arg).unwrap_or_else(|| "none".into())
            ),
            Some(_) if secret => format!("{key} = \"<redacted>\""),
            // A NATS URL may carry a user and password: shown as `***`, as everywhere else.
            Some(_) if id == "cluster" => format!(
                "{key} = {}",
                toml_value(arg, &[limes_cluster::redacted_url(&raw.join(""))])
            ),
            Some(_) => format!("{key} = {}", toml_value(arg, &raw)),
        };
        sections.entry(section).or_default().push(line);
    }
    let mut out = String::from("# The effective configuration of `limes serve`.\n");
    for section in order {
        out.push_str(&format!("\n[{section}]\n"));
        for line in &sections[section] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// "X" from a help text that ends in "[default: X]".
fn default_in_help(arg: &clap::Arg) -> Option<String> {
    let help = arg.get_long_help().or(arg.get_help())?.to_string();
    let (_, rest) = help.rsplit_once("[default: ")?;
    Some(rest.trim_end().trim_end_matches(']').to_owned())
}

/// Values as TOML: numbers bare, the rest quoted, a repeatable flag's values as a list.
fn toml_value(arg: &clap::Arg, values: &[String]) -> String {
    let one = |v: &String| {
        if v.parse::<f64>().is_ok() && !v.contains(',') {
            v.clone()
        } else {
            toml::Value::String(v.clone()).to_string()
        }
    };
    if matches!(arg.get_action(), ArgAction::Append) {
        format!(
            "[{}]",
            values.iter().map(one).collect::<Vec<_>>().join(", ")
        )
    } else if arg.get_value_delimiter().is_some() {
        // --location X,Y
        format!("[{}]", values.join(", "))
    } else {
        values.first().map(one).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("limes.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    fn merged(text: &str, cli: &[&str]) -> Result<ArgMatches, String> {
        let (_dir, path) = write(text);
        let cli: Vec<OsString> = cli.iter().map(OsString::from).collect();
        merge(&path, &cli)
    }

    #[test]
    fn every_flag_has_a_key_in_a_section() {
        let command = command();
        let keys = keys(&command);
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if NOT_SETTINGS.contains(&id) {
                continue;
            }
            assert!(
                keys.values().any(|k| k == id),
                "--{} has no key: give its group a heading ending in [section]",
                arg.get_long().unwrap_or(id)
            );
        }
        for key in [
            "listen.listen",
            "data.data_dir",
            "admission.queue_deadline",
            "grants.allow_subject",
            "cluster.nats_password_file",
            "auth.trusted_keys",
            "registry.registry_insecure",
        ] {
            assert!(keys.contains_key(key), "{key}");
        }
    }

    #[test]
    fn the_example_in_deploy_names_every_key_and_is_accepted() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/limes.toml");
        let text = std::fs::read_to_string(&example).unwrap();
        for key in keys(&command()).keys() {
            let (_, key) = key.split_once('.').unwrap();
            assert!(
                text.lines().any(|l| l
                    .trim_start_matches(['#', ' '])
                    .starts_with(&format!("{key} ="))),
                "deploy/limes.toml does not show `{key}`"
            );
        }
        merge(&example, &[]).unwrap();
    }

    #[test]
    fn flags_override_the_file_and_lists_are_replaced() {
        let text = "[admission]\ncapacity = 8\nqueue_deadline = [\"urgent=2s\", \"batch=1s\"]\n\n[cluster]\nlocation = [1.5, 2]\n\n[grants]\nallow_subject = [\"sensors.>\"]\n";
        let m = merged(text, &[]).unwrap();
        assert_eq!(m.get_one::<u32>("capacity"), Some(&8));
        assert_eq!(m.get_many::<String>("queue_deadline").unwrap().count(), 2);
        assert_eq!(
            m.get_many::<f64>("location")
                .unwrap()
                .copied()
                .collect::<Vec<_>>(),
            [1.5, 2.0]
        );
        let m = merged(
            text,
            &["--capacity", "3", "--queue-deadline", "regular=5ms"],
        )
        .unwrap();
        assert_eq!(m.get_one::<u32>("capacity"), Some(&3));
        let deadlines: Vec<&String> = m.get_many::<String>("queue_deadline").unwrap().collect();
        assert_eq!(deadlines, ["regular=5ms"]);
        // What the command line did not name stays the file's.
        assert_eq!(m.get_many::<f64>("location").unwrap().count(), 2);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file_line_and_key() {
        let err = merged(
            "[listen]\nlisten = \"127.0.0.1:1\"\n\n[admission]\ncapacty = 3\n",
            &[],
        )
        .unwrap_err();
        assert!(
            err.contains("limes.toml:5") && err.contains("admission.capacty"),
            "{err}"
        );
        let err = merged("[cluster]\n\nlisten = \"127.0.0.1:1\"\n", &[]).unwrap_err();
        assert!(
            err.contains("limes.toml:3") && err.contains("cluster.listen"),
            "{err}"
        );
        let err = merged("[admission]\ncapacity = 8\nrun_slots = \"many\"\n", &[]).unwrap_err();
        assert!(
            err.contains("limes.toml:3") && err.contains("admission.run_slots"),
            "{err}"
        );
        let err = merged("[listen]\nmax_body = \"lots\"\n", &[]).unwrap_err();
        assert!(
            err.contains("limes.toml:2") && err.contains("listen.max_body"),
            "{err}"
        );
        let err = merged("capacity = 8\n", &[]).unwrap_err();
        assert!(err.contains("limes.toml:1"), "{err}");
        let err = merged("[admission\n", &[]).unwrap_err();
        assert!(err.contains("limes.toml:1"), "{err}");
    }

    #[test]
    fn secrets_come_from_files_and_are_redacted_in_print() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("nats-password");
        std::fs::write(&secret, "hunter2\n").unwrap();
        let text = format!(
            "[cluster]\nnats_user = \"edge\"\nnats_password_file = {:?}\n",
            secret.display().to_string()
        );
        let m = merged(&text, &[]).unwrap();
        let args = <ServeArgs as clap::FromArgMatches>::from_arg_matches(&m).unwrap();
        match args.cluster.nats_auth().unwrap() {
            limes_cluster::NatsAuth::UserPassword { user, password } => {
                assert_eq!((user.as_str(), password.as_str()), ("edge", "hunter2"));
            }
            _ => panic!("user and password expected"),
        }
        let printed = print(&m);
        assert!(printed.contains("nats_password_file = "), "{printed}");
        assert!(!printed.contains("hunter2"));
        let m = merged(
            "[cluster]\ncluster = \"nats://edge:pa55word@nats.example:4222\"\n",
            &[],
        )
        .unwrap();
        let printed = print(&m);
        assert!(
            printed.contains("cluster = \"nats://edge:***@nats.example:4222\""),
            "{printed}"
        );
        assert!(!printed.contains("pa55word"), "{printed}");
        let m = merged("[cluster]\nnats_token = \"s3cret-token\"\n", &[]).unwrap();
        let printed = print(&m);
        assert!(
            printed.contains("nats_token = \"<redacted>\"") && !printed.contains("s3cret"),
            "{printed}"
        );
        // Defaults are shown, commented out; what the file set is not.
        assert!(
            printed.contains("# capacity: not set (default: 64)"),
            "{printed}"
        );
        assert!(
            printed.contains("# shutdown_grace = \"10s\"  (default)"),
            "{printed}"
        );
        assert!(printed.contains("\n[cluster]\n"), "{printed}");
    }
}
