//! The flags of `hearsay node` and `hearsay init`, derived from the config
//! key table ([`hearsay_node::config::KEYS`]): one `--<name-with-dashes>`
//! per key, repeatable for lists. They are built with clap's builder API and
//! flattened into the derived CLI through a hand-written [`clap::Args`]
//! impl, and applied through [`hearsay_node::Config::set`], the parser the
//! environment variables use too.

use clap::{Arg, ArgAction, ArgMatches, Command, FromArgMatches};
use hearsay_node::Config;
use hearsay_node::config::{ConfigError, KEYS, Key, Kind};

/// The config values given as flags, in table order.
#[derive(Debug, Default)]
pub struct NodeFlags {
    values: Vec<(&'static Key, String)>,
}

fn arg(key: &'static Key) -> Arg {
    let help = format!(
        "{} (config key `{}`, env {}; e.g. {})",
        key.help,
        key.name,
        key.env_var(),
        key.example
    );
    let arg = Arg::new(key.name)
        .long(key.flag())
        .value_name(key.value_name)
        .help(help);
    match key.kind {
        Kind::List => arg.action(ArgAction::Append),
        Kind::Text | Kind::OptionalText | Kind::Number => arg.action(ArgAction::Set),
        Kind::Signed => arg.action(ArgAction::Set).allow_negative_numbers(true),
    }
}

impl clap::Args for NodeFlags {
    fn augment_args(cmd: Command) -> Command {
        KEYS.iter().fold(cmd, |cmd, key| cmd.arg(arg(key)))
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for NodeFlags {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Self, clap::Error> {
        let values = KEYS
            .iter()
            .filter_map(|key| {
                let given = matches.get_many::<String>(key.name)?;
                Some((key, given.cloned().collect::<Vec<_>>().join(",")))
            })
            .collect();
        Ok(NodeFlags { values })
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl NodeFlags {
    /// Sets every key given as a flag; a bad value names the key and flag.
    pub fn apply(&self, config: &mut Config) -> Result<(), ConfigError> {
        for (key, raw) in &self.values {
            config.set(key.name, raw).map_err(|e| match e {
                ConfigError::Invalid { key, why } => ConfigError::Invalid {
                    key,
                    why: format!(
                        "--{}: {why}",
                        Key::find(key).map(Key::flag).unwrap_or_default()
                    ),
                },
                other => other,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        flags: NodeFlags,
    }

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("hearsay").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        let mut config = Config::default();
        cli.flags.apply(&mut config).map_err(|e| e.to_string())?;
        Ok(config)
    }

    #[test]
    fn every_key_has_a_flag() {
        let flags: Vec<String> = KEYS.iter().map(|k| format!("--{}", k.flag())).collect();
        let mut args = Vec::new();
        for (key, flag) in KEYS.iter().zip(&flags) {
            args.extend([flag.as_str(), key.example]);
        }
        let config = parse(&args).unwrap();
        for key in KEYS {
            assert_eq!(
                config.get(key.name).unwrap(),
                key.example,
                "--{}",
                key.flag()
            );
        }
    }

    #[test]
    fn list_flags_repeat() {
        let config = parse(&[
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--listen",
            "/ip4/127.0.0.1/udp/0/quic-v1",
        ])
        .unwrap();
        assert_eq!(
            config.listen,
            ["/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"]
        );
        assert_eq!(parse(&[]).unwrap(), Config::default());
    }

    #[test]
    fn a_bad_flag_value_names_the_key() {
        let e = parse(&["--target-peers", "lots"]).unwrap_err();
        assert!(
            e.contains("`target_peers`") && e.contains("--target-peers"),
            "{e}"
        );
    }
}
