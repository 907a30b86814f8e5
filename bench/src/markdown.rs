//! The benchmarks print their figures as Markdown tables, so that the docs
//! paste what a run printed rather than a copy typed out by hand.

/// `value` rounded to a whole number, its digits grouped by threes
/// (48605.2 → "48,605"), as the docs write figures.
pub(crate) fn thousands(value: f64) -> String {
    if !value.is_finite() {
        return value.to_string();
    }
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if value < 0.0 && digits != "0" {
        grouped.push('-');
    }
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    grouped
}

#[cfg(test)]
mod tests {
    use super::thousands;

    #[test]
    fn figures_are_rounded_and_grouped_by_threes() {
        assert_eq!(thousands(7.4), "7");
        assert_eq!(thousands(999.6), "1,000");
        assert_eq!(thousands(48_605.2), "48,605");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(-12_345.0), "-12,345");
        assert_eq!(thousands(-0.2), "0");
        assert_eq!(thousands(f64::NAN), "NaN");
    }
}
