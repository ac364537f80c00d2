//! A NumPy `.npy` array to a [`Dataset`]: `csv(...)` and `series(...)` blocks whose file ends in
//! `.npy` read a 2-D array of numbers (rows × columns; a 1-D array is one column) instead of
//! CSV text. Columns are named by index only (an array has no header); the blocks' arguments
//! mean what they mean for CSV, and only the values a block uses must be finite.

use super::csv::{assemble, keep_rows, window, KeyedInputs, SeriesError, SeriesProblem, SeriesRow};
use super::{DataError, Dataset};
use crate::ir::{Column, DataSource};

/// See [`super::parse_npy`]; `keyed` holds the inputs of a series with an `input_file`.
pub(super) fn parse(
    bytes: &[u8],
    source: &DataSource,
    file: &str,
    keyed: Option<&KeyedInputs>,
) -> Result<Dataset, DataError> {
    let error = |message: String| DataError::Npy {
        file: file.to_string(),
        message,
    };
    let array = crate::npy::read_npy(bytes).map_err(error)?;
    let (rows, width) = match array.shape[..] {
        [n] => (n, 1),
        [n, w] => (n, w),
        _ => {
            return Err(error(format!(
                "a data array must have 2 axes (rows × columns), this one has shape {:?}",
                array.shape
            )))
        }
    };
    if rows == 0 {
        return Err(DataError::NoRows {
            file: file.to_string(),
        });
    }
    let index = |column: &Column, role: &'static str| match column {
        Column::Index(c) if *c < width => Ok(*c),
        Column::Index(c) => Err(DataError::ColumnOutOfRange {
            file: file.to_string(),
            role,
            column: *c,
            width,
        }),
        Column::Name(name) => Err(error(format!(
            "{role} column `{name}` is named, but an .npy array has no header: use a column index"
        ))),
    };
    let range = |(start, end): &(Column, Column), role: &'static str| {
        let start = index(start, role)?;
        // The end is exclusive, so it may be the width itself.
        let end = match end {
            Column::Index(e) if *e == width => width,
            other => index(other, role)?,
        };
        if start >= end {
            return Err(DataError::EmptyColumnRange {
                file: file.to_string(),
                role,
                start,
                end,
            });
        }
        Ok((start, end))
    };
    let value = |r: usize, c: usize| {
        let v = array.values[r * width + c];
        if v.is_finite() {
            Ok(v)
        } else {
            Err(error(format!(
                "row {r}, column {c} holds {v}; every value a data block uses must be finite"
            )))
        }
    };
    match source {
        DataSource::Csv {
            input,
            label,
            shuffle,
            rows: keep,
            ..
        } => {
            let (start, end) = range(input, "input")?;
            let label = label.as_ref().map(|c| index(c, "label")).transpose()?;
            let mut inputs = Vec::with_capacity(rows * (end - start));
            let mut labels = Vec::with_capacity(if label.is_some() { rows } else { 0 });
            for r in 0..rows {
                for c in start..end {
                    inputs.push(value(r, c)?);
                }
                if let Some(c) = label {
                    labels.push(value(r, c)?);
                }
            }
            let data = Dataset::samples(rows, end - start, inputs, label.map(|_| labels));
            keep_rows(data, *shuffle, *keep, file)
        }
        DataSource::Series {
            t,
            values,
            rows: keep,
            traj,
            input,
            ..
        } if traj.is_some() || input.is_some() => {
            let t = index(t, "time")?;
            let (start, end) = range(values, "value")?;
            let traj = traj.as_ref().map(|c| index(c, "trajectory")).transpose()?;
            // With an input file the inputs are its columns, not this array's.
            let input = match keyed {
                Some(_) => (0, 0),
                None => input
                    .as_ref()
                    .map(|r| range(r, "input"))
                    .transpose()?
                    .unwrap_or((0, 0)),
            };
            let mut parsed = Vec::with_capacity(rows);
            for r in 0..rows {
                let key = traj
                    .map(|c| value(r, c))
                    .transpose()?
                    .map(|k| format!("{k}"));
                let inputs = match (keyed, &key) {
                    (Some(keyed), Some(key)) => keyed.inputs(key).ok_or_else(|| {
                        error(format!(
                            "row {r}: trajectory `{key}` has no row in the input file `{}`; add one with its inputs",
                            keyed.file
                        ))
                    })?,
                    _ => (input.0..input.1)
                        .map(|c| value(r, c))
                        .collect::<Result<_, _>>()?,
                };
                parsed.push(SeriesRow {
                    time: value(r, t)?,
                    values: (start..end)
                        .map(|c| value(r, c))
                        .collect::<Result<_, _>>()?,
                    inputs,
                    key,
                });
            }
            assemble(
                parsed,
                end - start,
                keyed.map_or(input.1 - input.0, |k| k.width),
                traj.is_some(),
                *keep,
                file,
            )
            .map_err(|e| match e {
                SeriesError::Data(d) => d,
                SeriesError::At(SeriesProblem::Time {
                    row,
                    previous,
                    time,
                    trajectory,
                }) => error(format!(
                    "row {row}: the time {time} does not increase after {previous}; the times of {} must increase strictly",
                    trajectory.map_or("a series".to_string(), |t| format!("trajectory {t}"))
                )),
                SeriesError::At(SeriesProblem::Input {
                    row,
                    index,
                    first,
                    value,
                    trajectory,
                }) => error(format!(
                    "row {row}, column {}: the input {value} differs from {first} on the first row of {}; a trajectory's inputs must be constant",
                    input.0 + index,
                    trajectory.map_or("the series".to_string(), |t| format!("trajectory {t}"))
                )),
            })
        }
        DataSource::Series {
            t,
            values,
            rows: keep,
            ..
        } => {
            let t = index(t, "time")?;
            let (start, end) = range(values, "value")?;
            let mut times: Vec<f64> = Vec::with_capacity(rows);
            let mut observed = Vec::with_capacity(rows * (end - start));
            for r in 0..rows {
                let time = value(r, t)?;
                if let Some(&previous) = times.last() {
                    if time <= previous {
                        return Err(error(format!(
                            "row {r}: the time {time} does not increase after {previous}; a series' times must increase strictly"
                        )));
                    }
                }
                times.push(time);
                for c in start..end {
                    observed.push(value(r, c)?);
                }
            }
            window(times, end - start, observed, *keep, file)
        }
        _ => Err(DataError::WrongSource {
            expected: "a `csv` or `series` data source",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::npy::{write_npy, Array};

    fn csv(input: (usize, usize), label: Option<usize>) -> DataSource {
        DataSource::Csv {
            path: "x.npy".into(),
            input: (Column::Index(input.0), Column::Index(input.1)),
            label: label.map(Column::Index),
            shuffle: None,
            rows: None,
        }
    }

    #[test]
    fn rows_and_columns_become_samples() {
        let bytes = write_npy(&Array::new(vec![3, 3], (0..9).map(f64::from).collect()));
        let d = parse(&bytes, &csv((0, 2), Some(2)), "x.npy", None).unwrap();
        assert_eq!((d.n, d.input_dim), (3, 2));
        assert_eq!(d.inputs, [0., 1., 3., 4., 6., 7.]);
        assert_eq!(d.labels, Some(vec![2., 5., 8.]));
        let series = DataSource::Series {
            path: "x.npy".into(),
            t: Column::Index(0),
            values: (Column::Index(1), Column::Index(3)),
            rows: Some((1, 3)),
            traj: None,
            input: None,
            input_file: None,
        };
        let d = parse(&bytes, &series, "x.npy", None).unwrap();
        assert_eq!(d.times, Some(vec![3., 6.]));
        assert_eq!(d.observed, Some(vec![4., 5., 7., 8.]));
    }

    #[test]
    fn a_trajectory_column_groups_rows_into_samples() {
        // Columns: trajectory, t, value, input.
        let rows = [
            [7., 0.5, 1., 10.],
            [3., 0.1, 2., 20.],
            [7., 1.5, 3., 10.],
            [3., 0.2, 4., 20.],
        ];
        let bytes = write_npy(&Array::new(vec![4, 4], rows.concat()));
        let series = |input_end| DataSource::Series {
            path: "x.npy".into(),
            t: Column::Index(1),
            values: (Column::Index(2), Column::Index(3)),
            rows: None,
            traj: Some(Column::Index(0)),
            input: Some((Column::Index(3), Column::Index(input_end))),
            input_file: None,
        };
        let d = parse(&bytes, &series(4), "x.npy", None).unwrap();
        assert_eq!(d.n, 2);
        assert_eq!(d.trajectories, Some(vec![0..2, 2..4]));
        assert_eq!(d.times, Some(vec![0.5, 1.5, 0.1, 0.2]));
        assert_eq!(d.inputs, [10., 20.]);
        let mut bad = rows;
        bad[3][3] = 21.;
        let bytes = write_npy(&Array::new(vec![4, 4], bad.concat()));
        assert_eq!(
            parse(&bytes, &series(4), "x.npy", None).unwrap_err().to_string(),
            "x.npy: error: row 3, column 3: the input 21 differs from 20 on the first row of trajectory 3; a trajectory's inputs must be constant"
        );
        let mut bad = rows;
        bad[2][1] = 0.5;
        let bytes = write_npy(&Array::new(vec![4, 4], bad.concat()));
        assert_eq!(
            parse(&bytes, &series(4), "x.npy", None).unwrap_err().to_string(),
            "x.npy: error: row 2: the time 0.5 does not increase after 0.5; the times of trajectory 7 must increase strictly"
        );
    }

    #[test]
    fn bad_arrays_name_the_file_and_the_place() {
        let err = |bytes: &[u8], source: &DataSource| {
            parse(bytes, source, "x.npy", None).unwrap_err().to_string()
        };
        let mut values: Vec<f64> = (0..6).map(f64::from).collect();
        values[4] = f64::NAN;
        let bytes = write_npy(&Array::new(vec![3, 2], values));
        assert_eq!(
            err(&bytes, &csv((0, 1), None)),
            "x.npy: error: row 2, column 0 holds NaN; every value a data block uses must be finite"
        );
        // A NaN in a column the block does not use is no error.
        let ok = parse(&bytes, &csv((1, 2), None), "x.npy", None).unwrap();
        assert_eq!(ok.inputs, [1., 3., 5.]);
        assert!(err(&bytes, &csv((0, 3), None)).contains("out of range"));
        let named = DataSource::Csv {
            path: "x.npy".into(),
            input: (Column::Name("a".into()), Column::Index(2)),
            label: None,
            shuffle: None,
            rows: None,
        };
        assert!(err(&bytes, &named).contains("no header: use a column index"));
        let cube = write_npy(&Array::new(vec![1, 1, 1], vec![0.0]));
        assert!(err(&cube, &csv((0, 1), None)).contains("2 axes"));
        assert!(err(b"junk", &csv((0, 1), None)).starts_with("x.npy: error: not an .npy file"));
        let down = write_npy(&Array::new(vec![2, 2], vec![1., 0., 0., 0.]));
        let series = DataSource::Series {
            path: "x.npy".into(),
            t: Column::Index(0),
            values: (Column::Index(1), Column::Index(2)),
            rows: None,
            traj: None,
            input: None,
            input_file: None,
        };
        assert!(err(&down, &series).contains("row 1: the time 0 does not increase after 1"));
    }
}
