//! A small SVG plotting kit shared by the report's charts (reward against trial, the
//! weight-sharing learning curves): a document frame, axes with ticks and labels mapping data to
//! pixels, polylines and a legend. Text is escaped, so labels may come from anywhere.

use std::fmt::Write as _;

use nasnet_searchspace::svg::escape;

/// The colours of the report's charts (colour-blind safe, Paul Tol's "bright" and "vibrant").
pub(crate) const BLUE: &str = "#4477aa";
/// Second series.
pub(crate) const ORANGE: &str = "#ee7733";
/// Third series, and failures.
pub(crate) const RED: &str = "#cc3311";

/// The start of an SVG document of `width` x `height` px on a white background; close it with
/// [`end_document`].
pub(crate) fn start_document(width: f64, height: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    s
}

/// Closes a document begun with [`start_document`].
pub(crate) fn end_document(s: &mut String) {
    s.push_str("</svg>\n");
}

/// The range a chart shows for `values`: their span padded by 5 % and kept inside `bounds`
/// when given; `(0, 1)` when there is no span to show.
pub(crate) fn padded_range(values: &[f64], bounds: Option<(f64, f64)>) -> (f64, f64) {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !(lo.is_finite() && hi > lo) {
        return match bounds {
            None if lo.is_finite() => (lo - 0.5, lo + 0.5),
            _ => (0.0, 1.0),
        };
    }
    let pad = (hi - lo) * 0.05;
    let (lo, hi) = (lo - pad, hi + pad);
    match bounds {
        Some((min, max)) => (lo.max(min), hi.min(max)),
        None => (lo, hi),
    }
}

/// A plotting area: where it lies in the document and the data ranges it shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Axes {
    /// Left edge of the plotting area, px.
    pub(crate) left: f64,
    /// Top edge, px.
    pub(crate) top: f64,
    /// Width of the plotting area, px.
    pub(crate) width: f64,
    /// Height of the plotting area, px.
    pub(crate) height: f64,
    /// Data range on x.
    pub(crate) x: (f64, f64),
    /// Data range on y.
    pub(crate) y: (f64, f64),
}

impl Axes {
    /// Pixel column of data value `x`.
    pub(crate) fn px(&self, x: f64) -> f64 {
        let (lo, hi) = self.x;
        self.left + self.width * (x - lo) / (hi - lo)
    }

    /// Pixel row of data value `y`, clamped to the area.
    pub(crate) fn py(&self, y: f64) -> f64 {
        let (lo, hi) = self.y;
        self.bottom() - self.height * ((y - lo) / (hi - lo)).clamp(0.0, 1.0)
    }

    /// Bottom edge of the plotting area, px.
    pub(crate) fn bottom(&self) -> f64 {
        self.top + self.height
    }

    /// The two axis lines, five ticks on each (x with `x_decimals` decimals, y with 3) and the
    /// axis labels.
    pub(crate) fn draw(&self, s: &mut String, x_label: &str, y_label: &str, x_decimals: usize) {
        let (l, r, t, b) = (self.left, self.left + self.width, self.top, self.bottom());
        let _ = writeln!(
            s,
            r#"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="black"/><line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="black"/>"#
        );
        for i in 0..=4 {
            let f = i as f64 / 4.0;
            let y = self.y.0 + (self.y.1 - self.y.0) * f;
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{:.1}" text-anchor="end">{y:.3}</text>"#,
                l - 6.0,
                self.py(y) + 4.0
            );
            let x = self.x.0 + (self.x.1 - self.x.0) * f;
            let _ = writeln!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{x:.x_decimals$}</text>"#,
                self.px(x),
                b + 18.0
            );
        }
        let (mid_x, mid_y, label_x) = ((l + r) / 2.0, (t + b) / 2.0, l - 52.0);
        let _ = writeln!(
            s,
            r#"<text x="{mid_x}" y="{}" text-anchor="middle">{}</text><text x="{label_x}" y="{mid_y}" transform="rotate(-90 {label_x} {mid_y})" text-anchor="middle">{}</text>"#,
            b + 36.0,
            escape(x_label),
            escape(y_label)
        );
    }

    /// A line through `points` (data coordinates), in order.
    pub(crate) fn polyline(&self, s: &mut String, points: &[(f64, f64)], colour: &str) {
        if points.is_empty() {
            return;
        }
        let coords: Vec<String> = points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", self.px(x), self.py(y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            coords.join(" ")
        );
    }

    /// A legend above the area's top right corner, in one line: a short stroke of each colour
    /// and its name (above, so it never hides data).
    pub(crate) fn legend(&self, s: &mut String, entries: &[(&str, &str)]) {
        let entry_width = |name: &str| 32.0 + 7.0 * name.chars().count() as f64;
        let mut x = self.left + self.width - entries.iter().map(|e| entry_width(e.0)).sum::<f64>();
        let y = self.top - 14.0;
        for (name, colour) in entries {
            let _ = writeln!(
                s,
                r#"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}" fill="{colour}">{}</text>"#,
                x + 20.0,
                x + 26.0,
                y + 4.0,
                escape(name)
            );
            x += entry_width(name);
        }
    }

    /// A heading above the area.
    pub(crate) fn title(&self, s: &mut String, title: &str) {
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" font-size="13" font-weight="bold">{}</text>"#,
            self.left,
            self.top - 10.0,
            escape(title)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_range_pads_and_clamps() {
        let close = |(lo, hi): (f64, f64), (a, b): (f64, f64)| {
            assert!(
                (lo - a).abs() < 1e-12 && (hi - b).abs() < 1e-12,
                "{lo} {hi}"
            );
        };
        close(padded_range(&[0.5, 0.9], Some((0.0, 1.0))), (0.48, 0.92));
        close(padded_range(&[0.0, 1.0], Some((0.0, 1.0))), (0.0, 1.0));
        close(padded_range(&[2.0, 4.0], None), (1.9, 4.1));
        assert_eq!(padded_range(&[], Some((0.0, 1.0))), (0.0, 1.0));
        assert_eq!(padded_range(&[3.0], None), (2.5, 3.5));
    }

    #[test]
    fn axes_map_the_range_onto_the_area() {
        let a = Axes {
            left: 10.0,
            top: 20.0,
            width: 100.0,
            height: 50.0,
            x: (0.0, 10.0),
            y: (1.0, 2.0),
        };
        assert_eq!((a.px(0.0), a.px(10.0), a.px(5.0)), (10.0, 110.0, 60.0));
        assert_eq!((a.py(1.0), a.py(2.0), a.py(1.5)), (70.0, 20.0, 45.0));
        assert_eq!((a.py(-5.0), a.py(9.0)), (70.0, 20.0), "clamped");
    }
}
