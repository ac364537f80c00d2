//! Pictures: a [`Figure`] of panels (lines, points, a heat map) rendered to SVG text or PNG
//! bytes with `plotters`. `cli::plot` evaluates a model into a `Figure`; this module only draws
//! it, so nothing here touches files or knows the IR.
//!
//! Text is drawn with DejaVu Sans, embedded in the binary (`assets/fonts/`, with its licence),
//! so that a picture looks the same on every machine and no system font library is needed.

use std::sync::Once;

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{Color as _, FontStyle, RGBColor};

/// The embedded font (DejaVu Sans 2.37, Bitstream Vera licence: `assets/fonts/`).
static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// The family name every text style asks for; the embedded font is registered under it.
const FAMILY: &str = "sans-serif";

/// The image formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Scalable vector graphics (text).
    Svg,
    /// An 8-bit RGB PNG.
    Png,
}

/// A picture: panels stacked from top to bottom under one title.
#[derive(Clone, Debug, Default)]
pub struct Figure {
    /// The title above every panel.
    pub title: String,
    /// The panels, top to bottom.
    pub panels: Vec<Panel>,
}

/// One chart: a heat map under lines under points, on 2-D axes, or lines on 3-D axes.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    /// The panel's caption (empty: none).
    pub caption: String,
    /// The horizontal axis' description.
    pub x_label: String,
    /// The vertical axis' description.
    pub y_label: String,
    /// Set for a 3-D panel: the depth axis' description. Points are then `[x, y, z]` with `z`
    /// drawn upward (the third variable of a phase portrait is the vertical one).
    pub z_label: Option<String>,
    /// A heat map filling the plot area.
    pub heat: Option<Heat>,
    /// Polylines.
    pub lines: Vec<Line>,
    /// Scatter points.
    pub points: Vec<Points>,
    /// Draw equal units on both axes (phase planes, the plane a flow moves).
    pub equal_aspect: bool,
}

/// A polyline.
#[derive(Clone, Debug)]
pub struct Line {
    /// The legend entry (`None`: not in the legend).
    pub label: Option<String>,
    /// Points `[x, y, z]`; `z` is read on 3-D panels only.
    pub points: Vec<[f64; 3]>,
    /// Its colour.
    pub color: Color,
    /// Stroke width in pixels.
    pub width: u32,
    /// Colour the line by its progress (start dark violet, end yellow) instead of `color`,
    /// so that a single trajectory shows its direction of time.
    pub by_progress: bool,
}

/// A set of scatter points.
#[derive(Clone, Debug)]
pub struct Points {
    /// The legend entry.
    pub label: Option<String>,
    /// Points `[x, y]`.
    pub points: Vec<[f64; 2]>,
    /// Fill colour.
    pub color: Color,
    /// Radius in pixels.
    pub radius: u32,
}

/// A colour with opacity.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Color {
    /// Red, green, blue.
    pub rgb: [u8; 3],
    /// Opacity, 0 to 1.
    pub alpha: f64,
}

impl Color {
    /// The `i`-th colour of the categorical palette (Tableau 10), cycling.
    pub fn palette(i: usize) -> Color {
        const TAB10: [[u8; 3]; 10] = [
            [31, 119, 180],
            [255, 127, 14],
            [44, 160, 44],
            [214, 39, 40],
            [148, 103, 189],
            [140, 86, 75],
            [227, 119, 194],
            [127, 127, 127],
            [188, 189, 34],
            [23, 190, 207],
        ];
        Color {
            rgb: TAB10[i % TAB10.len()],
            alpha: 1.0,
        }
    }

    /// A grey.
    pub fn grey(level: u8, alpha: f64) -> Color {
        Color {
            rgb: [level; 3],
            alpha,
        }
    }

    /// This colour with another opacity.
    pub fn with_alpha(self, alpha: f64) -> Color {
        Color { alpha, ..self }
    }

    fn style(self) -> RGBAColor {
        RGBColor(self.rgb[0], self.rgb[1], self.rgb[2]).mix(self.alpha)
    }
}

/// How a heat map's values become colours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ColorMap {
    /// Viridis over the values' range (densities, costs).
    Viridis,
    /// A probability in `[0, 1]` of class 1 against class 0: class 0's palette colour, white at
    /// 1/2, class 1's.
    TwoClass,
    /// `k + c` for the predicted class `k` with confidence `c` in `[0, 1)`: class `k`'s
    /// palette colour, paler as the confidence falls.
    Classes,
}

/// Values on a regular grid of cells over a rectangle.
#[derive(Clone, Debug)]
pub struct Heat {
    /// The horizontal range covered.
    pub x: (f64, f64),
    /// The vertical range covered.
    pub y: (f64, f64),
    /// Cells across.
    pub nx: usize,
    /// Cells up.
    pub ny: usize,
    /// `values[j * nx + i]`: the cell in column `i` from the left and row `j` from the bottom.
    pub values: Vec<f64>,
    /// The colouring.
    pub map: ColorMap,
}

/// Why a figure could not be drawn.
#[derive(Debug)]
pub struct RenderError(pub String);

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl<E: std::error::Error + Send + Sync> From<DrawingAreaErrorKind<E>> for RenderError {
    fn from(e: DrawingAreaErrorKind<E>) -> Self {
        RenderError(format!("cannot draw the picture: {e}"))
    }
}

/// Registers the embedded font once per process.
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        // The font is a fixed, valid file (checked by a test), so this cannot fail at run time.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Renders `figure` at `width × height` pixels in `format`: SVG text or PNG bytes.
pub fn render(
    figure: &Figure,
    format: Format,
    width: u32,
    height: u32,
) -> Result<Vec<u8>, RenderError> {
    register_font();
    match format {
        Format::Svg => {
            let mut text = String::new();
            {
                let root = SVGBackend::with_string(&mut text, (width, height)).into_drawing_area();
                draw(figure, &root)?;
                root.present()?;
            }
            Ok(text.into_bytes())
        }
        Format::Png => {
            let mut pixels = vec![0u8; width as usize * height as usize * 3];
            {
                let root =
                    BitMapBackend::with_buffer(&mut pixels, (width, height)).into_drawing_area();
                draw(figure, &root)?;
                root.present()?;
            }
            encode_png(&pixels, width, height)
        }
    }
}

/// Encodes 8-bit RGB pixels as a PNG.
fn encode_png(pixels: &[u8], width: u32, height: u32) -> Result<Vec<u8>, RenderError> {
    let mut bytes = Vec::new();
    let failed = |e: png::EncodingError| RenderError(format!("cannot encode the PNG: {e}"));
    {
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.set_compression(png::Compression::Best);
        let mut writer = encoder.write_header().map_err(failed)?;
        writer.write_image_data(pixels).map_err(failed)?;
        writer.finish().map_err(failed)?;
    }
    Ok(bytes)
}

fn draw<DB: DrawingBackend>(
    figure: &Figure,
    root: &DrawingArea<DB, Shift>,
) -> Result<(), RenderError>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (_, height) = root.dim_in_pixel();
    let title_size = (height / 30).clamp(14, 24);
    let body = root.titled(&figure.title, (FAMILY, title_size))?;
    if figure.panels.is_empty() {
        return Ok(());
    }
    let areas = body.split_evenly((figure.panels.len(), 1));
    for (panel, area) in figure.panels.iter().zip(&areas) {
        if panel.z_label.is_some() {
            draw_3d(panel, area)?;
        } else {
            draw_2d(panel, area)?;
        }
    }
    Ok(())
}

/// Whether a caption is non-empty and fits in `width` pixels at `size`: a caption that does
/// not fit is left out (small pictures) rather than cut at both ends. DejaVu Sans averages
/// about 0.55 em a character.
fn fits(caption: &str, size: u32, width: u32) -> bool {
    !caption.is_empty() && caption.chars().count() as f64 * 0.55 * size as f64 <= width as f64
}

/// An axis label: up to four decimals without trailing zeros (`5`, `0.25`), and scientific
/// notation for very small or large values, which fixed decimals would show as `0.0` or as
/// long strings.
fn tick(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let text = format!("{v:.4}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

/// The range of `values` widened by a twentieth on each side (a unit around a constant).
fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (-1.0, 1.0);
    }
    if hi - lo < 1e-12 * (1.0 + lo.abs()) {
        return (lo - 1.0, hi + 1.0);
    }
    let pad = (hi - lo) / 20.0;
    (lo - pad, hi + pad)
}

/// The 2-D extent of a panel: the heat map's rectangle, else its lines and points, padded.
fn extent_2d(panel: &Panel) -> ((f64, f64), (f64, f64)) {
    if let Some(heat) = &panel.heat {
        return (heat.x, heat.y);
    }
    let xs = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p[0]))
        .chain(
            panel
                .points
                .iter()
                .flat_map(|p| p.points.iter().map(|p| p[0])),
        );
    let ys = panel
        .lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p[1]))
        .chain(
            panel
                .points
                .iter()
                .flat_map(|p| p.points.iter().map(|p| p[1])),
        );
    (padded_range(xs), padded_range(ys))
}

/// Widens the shorter range so that a pixel is the same length on both axes of a plot area
/// `width × height` pixels.
fn equalize(x: (f64, f64), y: (f64, f64), width: f64, height: f64) -> ((f64, f64), (f64, f64)) {
    let per_x = (x.1 - x.0) / width;
    let per_y = (y.1 - y.0) / height;
    if per_x > per_y {
        let half = per_x * height / 2.0;
        let mid = (y.0 + y.1) / 2.0;
        (x, (mid - half, mid + half))
    } else {
        let half = per_y * width / 2.0;
        let mid = (x.0 + x.1) / 2.0;
        ((mid - half, mid + half), y)
    }
}

fn draw_2d<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), RenderError>
where
    DB::ErrorType: 'static,
{
    let (width, height) = area.dim_in_pixel();
    let font_size = (height / 22).clamp(11, 16);
    let (x_area, y_area) = (font_size * 3, font_size * 4 + 10);
    let (mut x, mut y) = extent_2d(panel);
    if panel.equal_aspect {
        let caption = if panel.caption.is_empty() {
            0
        } else {
            font_size * 2
        };
        let plot_w = width.saturating_sub(y_area + 20).max(1) as f64;
        let plot_h = height.saturating_sub(x_area + caption + 20).max(1) as f64;
        (x, y) = equalize(x, y, plot_w, plot_h);
    }
    let mut builder = ChartBuilder::on(area);
    builder
        .margin(10)
        .x_label_area_size(x_area)
        .y_label_area_size(y_area);
    if fits(&panel.caption, font_size + 2, width) {
        builder.caption(&panel.caption, (FAMILY, font_size + 2));
    }
    let mut chart = builder.build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .x_desc(panel.x_label.as_str())
        .y_desc(panel.y_label.as_str())
        .label_style((FAMILY, font_size))
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .axis_desc_style((FAMILY, font_size))
        .light_line_style(RGBColor(235, 235, 235))
        .bold_line_style(RGBColor(215, 215, 215))
        .draw()?;
    if let Some(heat) = &panel.heat {
        draw_heat(&mut chart, heat)?;
    }
    let mut legend = false;
    for line in &panel.lines {
        let style = line.color.style().stroke_width(line.width);
        if line.by_progress {
            draw_by_progress(&mut chart, line, |p| (p[0], p[1]))?;
            continue;
        }
        let series = chart.draw_series(LineSeries::new(
            line.points.iter().map(|p| (p[0], p[1])),
            style,
        ))?;
        if let Some(label) = &line.label {
            legend = true;
            series
                .label(label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style));
        }
    }
    for points in &panel.points {
        let fill = points.color.style().filled();
        let edge = RGBColor(40, 40, 40).mix(0.6 * points.color.alpha);
        let radius = points.radius;
        let series = chart.draw_series(points.points.iter().map(move |p| {
            EmptyElement::at((p[0], p[1]))
                + Circle::new((0, 0), radius, fill)
                + Circle::new((0, 0), radius, edge)
        }))?;
        if let Some(label) = &points.label {
            legend = true;
            series
                .label(label.as_str())
                .legend(move |(x, y)| Circle::new((x + 9, y), radius.max(3), fill));
        }
    }
    if legend {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, font_size))
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(160, 160, 160))
            .draw()?;
    }
    Ok(())
}

/// Draws a line in short pieces coloured from violet (start) to yellow (end).
fn draw_by_progress<DB, CT, P>(
    chart: &mut ChartContext<'_, DB, CT>,
    line: &Line,
    at: impl Fn(&[f64; 3]) -> P,
) -> Result<(), RenderError>
where
    DB: DrawingBackend,
    DB::ErrorType: 'static,
    CT: CoordTranslate<From = P>,
    P: Clone + 'static,
{
    // Pieces of a few points keep the file small and the colour change smooth.
    const PIECES: usize = 120;
    let n = line.points.len();
    if n < 2 {
        return Ok(());
    }
    let piece = n.div_ceil(PIECES).max(1);
    let mut start = 0;
    while start + 1 < n {
        let end = (start + piece).min(n - 1);
        let color = viridis(start as f64 / (n - 1) as f64);
        let style = color.mix(line.color.alpha).stroke_width(line.width);
        chart.draw_series(LineSeries::new(
            line.points[start..=end].iter().map(&at),
            style,
        ))?;
        start = end;
    }
    Ok(())
}

fn draw_heat<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    heat: &Heat,
) -> Result<(), RenderError>
where
    DB::ErrorType: 'static,
{
    let (lo, hi) = heat
        .values
        .iter()
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let span = if hi > lo { hi - lo } else { 1.0 };
    let dx = (heat.x.1 - heat.x.0) / heat.nx as f64;
    let dy = (heat.y.1 - heat.y.0) / heat.ny as f64;
    let cells = (0..heat.ny).flat_map(|j| (0..heat.nx).map(move |i| (i, j)));
    chart.draw_series(cells.map(|(i, j)| {
        let v = heat.values[j * heat.nx + i];
        let color = match heat.map {
            _ if !v.is_finite() => RGBColor(255, 255, 255),
            ColorMap::Viridis => viridis((v - lo) / span),
            ColorMap::TwoClass => two_class(v),
            ColorMap::Classes => class_shade(v),
        };
        let x0 = heat.x.0 + i as f64 * dx;
        let y0 = heat.y.0 + j as f64 * dy;
        Rectangle::new([(x0, y0), (x0 + dx, y0 + dy)], color.filled())
    }))?;
    Ok(())
}

/// Mixes `a` and `b`: `a` at `s = 0`, `b` at `s = 1`.
fn mix(a: [u8; 3], b: [u8; 3], s: f64) -> RGBColor {
    let s = s.clamp(0.0, 1.0);
    let c = |i: usize| (a[i] as f64 + (b[i] as f64 - a[i] as f64) * s).round() as u8;
    RGBColor(c(0), c(1), c(2))
}

/// A pale version of class colours, so that the data points drawn on them stand out.
fn pale(class: usize, strength: f64) -> RGBColor {
    mix([255; 3], Color::palette(class).rgb, 0.55 * strength)
}

fn two_class(p: f64) -> RGBColor {
    let p = p.clamp(0.0, 1.0);
    if p < 0.5 {
        pale(0, (0.5 - p) * 2.0)
    } else {
        pale(1, (p - 0.5) * 2.0)
    }
}

fn class_shade(v: f64) -> RGBColor {
    let class = v.max(0.0).floor();
    pale(class as usize, v - class)
}

/// The viridis colour map (matplotlib's), from eleven of its stops, at `s` in `[0, 1]`.
pub fn viridis(s: f64) -> RGBColor {
    const STOPS: [[u8; 3]; 11] = [
        [68, 1, 84],
        [72, 36, 117],
        [65, 68, 135],
        [53, 95, 141],
        [42, 120, 142],
        [33, 145, 140],
        [34, 168, 132],
        [68, 191, 112],
        [122, 209, 81],
        [189, 223, 38],
        [253, 231, 37],
    ];
    let s = if s.is_finite() {
        s.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let at = s * (STOPS.len() - 1) as f64;
    let k = (at.floor() as usize).min(STOPS.len() - 2);
    mix(STOPS[k], STOPS[k + 1], at - k as f64)
}

fn draw_3d<DB: DrawingBackend>(
    panel: &Panel,
    area: &DrawingArea<DB, Shift>,
) -> Result<(), RenderError>
where
    DB::ErrorType: 'static,
{
    let (width, height) = area.dim_in_pixel();
    let font_size = (height / 30).clamp(11, 16);
    let all = || panel.lines.iter().flat_map(|l| l.points.iter());
    let x = padded_range(all().map(|p| p[0]));
    let y = padded_range(all().map(|p| p[1]));
    let z = padded_range(all().map(|p| p[2]));
    let mut builder = ChartBuilder::on(area);
    builder.margin(10);
    if fits(&panel.caption, font_size + 2, width) {
        builder.caption(&panel.caption, (FAMILY, font_size + 2));
    }
    // plotters' vertical axis is its second: the panel's third coordinate goes there.
    let mut chart = builder.build_cartesian_3d(x.0..x.1, z.0..z.1, y.0..y.1)?;
    chart.with_projection(|mut p| {
        // Seen from the front left and a little above: for the Lorenz system both wings of
        // the butterfly show side by side.
        p.pitch = 0.25;
        p.yaw = -0.7;
        p.scale = 0.85;
        p.into_matrix()
    });
    chart
        .configure_axes()
        .label_style((FAMILY, font_size))
        .x_formatter(&|v| tick(*v))
        .y_formatter(&|v| tick(*v))
        .z_formatter(&|v| tick(*v))
        .light_grid_style(RGBColor(230, 230, 230))
        .max_light_lines(3)
        .draw()?;
    for line in &panel.lines {
        if line.by_progress {
            draw_by_progress(&mut chart, line, |p| (p[0], p[2], p[1]))?;
        } else {
            let style = line.color.style().stroke_width(line.width);
            chart.draw_series(LineSeries::new(
                line.points.iter().map(|p| (p[0], p[2], p[1])),
                style,
            ))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_font_parses() {
        assert!(plotters::style::register_font("test-family", FontStyle::Normal, FONT).is_ok());
    }

    /// Equal units: after widening, a pixel spans the same length on both axes, and the
    /// original ranges stay inside.
    #[test]
    fn equal_aspect_keeps_the_data_and_equalizes_units() {
        let ((x0, x1), (y0, y1)) = equalize((0.0, 4.0), (0.0, 1.0), 200.0, 200.0);
        assert_eq!((x0, x1), (0.0, 4.0));
        assert!((y1 - y0 - 4.0).abs() < 1e-12 && y0 <= 0.0 && y1 >= 1.0);
        let ((x0, x1), (y0, y1)) = equalize((0.0, 1.0), (0.0, 3.0), 300.0, 100.0);
        assert!(((x1 - x0) / 300.0 - (y1 - y0) / 100.0).abs() < 1e-12);
        assert!(x0 <= 0.0 && x1 >= 1.0);
    }

    #[test]
    fn ticks_are_short_and_never_round_small_values_to_zero() {
        assert_eq!(tick(5.0), "5");
        assert_eq!(tick(0.25), "0.25");
        assert_eq!(tick(-0.00001), "-1.0e-5");
        assert_eq!(tick(200000.0), "2.0e5");
        assert_eq!(tick(-0.0), "0");
    }

    /// The maps' ends are their documented colours.
    #[test]
    fn colour_maps_end_where_documented() {
        assert_eq!(viridis(0.0), RGBColor(68, 1, 84));
        assert_eq!(viridis(1.0), RGBColor(253, 231, 37));
        assert_eq!(two_class(0.5), RGBColor(255, 255, 255));
        assert_eq!(class_shade(2.0), RGBColor(255, 255, 255));
    }
}
