//! Argument types several subcommands share: the output format, workload
//! names and human durations (`500ms`, `2m`, `1m30s`). The backend value enum
//! is `cvbench::backend::BackendId`.

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::ValueEnum;
use std::time::Duration;

use cvbench::workload::Workload;

/// How a command prints its result.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned, human-readable text.
    #[default]
    Table,
    /// Machine-readable JSON (one record per line for `run`).
    Json,
}

impl Format {
    /// `--format`, overridden by the older `--json` flag when that is given.
    pub fn resolve(self, json_flag: bool) -> Format {
        if json_flag {
            Format::Json
        } else {
            self
        }
    }
}

/// `--workload`: the names come from [`Workload::ALL`], so `--help` and the
/// shell completions list exactly what the harness runs.
pub fn workload_parser() -> impl TypedValueParser<Value = Workload> {
    PossibleValuesParser::new(Workload::names()).try_map(|s| s.parse::<Workload>())
}

/// A duration written as `500ms`, `2m`, `1m30s`, `1.5s` or `90` (seconds).
/// Units: ns, us, ms, s, m, h.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("empty duration (write e.g. 500ms, 30s, 2m)".into());
    }
    if let Ok(secs) = t.parse::<f64>() {
        return seconds(secs, text);
    }
    let mut total = 0.0_f64;
    let mut rest = t;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let unit_len = rest[num_len..].find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len() - num_len);
        let (num, unit) = (&rest[..num_len], rest[num_len..num_len + unit_len].trim());
        let value: f64 = num.parse().map_err(|_| format!("{text:?}: expected a number before {unit:?}"))?;
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("{text:?}: unknown unit {other:?} (use ns, us, ms, s, m or h)")),
        };
        total += value * scale;
        rest = &rest[num_len + unit_len..];
    }
    seconds(total, text)
}

fn seconds(secs: f64, text: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{text:?}: not a duration (negative or too large)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
    }

    #[test]
    fn bare_numbers_are_seconds() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
    }

    #[test]
    fn bad_durations_are_rejected() {
        for bad in ["", "ms", "5 parsecs", "-3s", "1e400"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn json_flag_overrides_format() {
        assert_eq!(Format::Table.resolve(true), Format::Json);
        assert_eq!(Format::Table.resolve(false), Format::Table);
    }
}
