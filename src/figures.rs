//! How a figure prints, one copy for the report and the labs: [`num`] to about three significant
//! digits, [`fixed`] to a given number of decimals or "-" when there is none. A leaf module.

/// A figure with about three significant digits.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 {
        "0".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A figure with `prec` decimals, or "-" when it is missing.
pub fn fixed(v: Option<f64>, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}")).unwrap_or_else(|| "-".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_keeps_about_three_significant_digits() {
        assert_eq!(num(0.0), "0");
        assert_eq!(num(1234.5), "1234");
        assert_eq!(num(12.345), "12.3");
        assert_eq!(num(1.2345), "1.23");
        assert_eq!(num(0.012345), "0.012");
    }

    #[test]
    fn fixed_prints_a_dash_for_a_missing_figure() {
        assert_eq!((fixed(Some(1.25), 1), fixed(None, 2)), ("1.2".to_string(), "-".to_string()));
    }
}
