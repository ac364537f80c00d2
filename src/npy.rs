//! NumPy's `.npy` and `.npz` files of numbers, read and written here; only inflating is a dependency's.
//!
//! `.npy` is [format 1.0](https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html):
//! the magic `\x93NUMPY`, the version (1, 0), a little-endian `u16` header length, and a
//! header that is a Python dict literal `{'descr': '<f8', 'fortran_order': False, 'shape':
//! (2, 3), }` padded with spaces to a multiple of 64 bytes and ended by `\n`; then the
//! values, row-major. nodec writes `<f8` (little-endian `f64`) in C order. It reads versions
//! 1.0, 2.0 and 3.0, C or Fortran order, and the dtypes `f8`, `f4`, `i1`–`i8`, `u1`–`u8` and
//! `b1` in either byte order, converting to `f64` (integers above 2⁵³ round).
//!
//! `.npz` is a zip archive of `.npy` files, one per named array (`np.savez`). nodec writes
//! entries stored without compression, as `np.savez` does; it reads stored and deflated entries
//! (`np.savez_compressed`), zip64 extra fields included, CRC-32 checked; inflating is
//! `miniz_oxide`'s.
//!
//! Every malformed file is an `Err` with a message that says what is wrong; nothing here
//! panics on its input or touches files (`cli` reads and writes them).

/// An array of numbers: its shape (`[]` for a scalar) and its values, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Array {
    /// The size of each axis, outermost first.
    pub shape: Vec<usize>,
    /// `shape`'s product of values, row-major (C order).
    pub values: Vec<f64>,
}

impl Array {
    /// An array of `values` with `shape`; their counts must agree.
    pub fn new(shape: Vec<usize>, values: Vec<f64>) -> Array {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        Array { shape, values }
    }
}

/// The first bytes of every `.npy` file.
pub const NPY_MAGIC: &[u8] = b"\x93NUMPY";

/// Whether `bytes` start like a zip archive (an `.npz`).
pub fn is_zip(bytes: &[u8]) -> bool {
    bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06")
}

/// A shape as Python writes a tuple: `()`, `(3,)`, `(2, 3)`.
fn tuple(shape: &[usize]) -> String {
    match shape {
        [] => "()".to_string(),
        [n] => format!("({n},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The `.npy` (format 1.0, `<f8`, C order) bytes of an array.
pub fn write_npy(array: &Array) -> Vec<u8> {
    let mut bytes = npy_header(&array.shape);
    bytes.reserve(8 * array.values.len());
    for v in &array.values {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    bytes
}

/// The magic, version and header of an `.npy` file of `<f8` values in C order with this
/// shape: the values' bytes follow (so a writer can stream them).
pub fn npy_header(shape: &[usize]) -> Vec<u8> {
    let mut header = format!(
        "{{'descr': '<f8', 'fortran_order': False, 'shape': {}, }}",
        tuple(shape)
    );
    // Magic (6), version (2), length (2), header and its final newline: a multiple of 64.
    let unpadded = NPY_MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut bytes = Vec::with_capacity(10 + header.len());
    bytes.extend_from_slice(NPY_MAGIC);
    bytes.extend_from_slice(&[1, 0]);
    // A shape tuple has at most a few dozen axes of 20 digits: far below 65535 bytes.
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// A value of the header's dict literal.
#[derive(Debug, PartialEq)]
enum Literal {
    Str(String),
    Bool(bool),
    Int(usize),
    Tuple(Vec<Literal>),
    Dict(Vec<(String, Literal)>),
}

/// A small parser of the Python literals a `.npy` header holds.
struct LiteralParser<'a> {
    text: &'a [u8],
    at: usize,
}

impl LiteralParser<'_> {
    fn skip_space(&mut self) {
        while self.at < self.text.len() && self.text[self.at].is_ascii_whitespace() {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.text.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// Items up to `close`, separated by commas, a trailing comma allowed.
    fn items<T>(
        &mut self,
        close: u8,
        mut item: impl FnMut(&mut Self) -> Result<T, String>,
    ) -> Result<Vec<T>, String> {
        let mut items = Vec::new();
        loop {
            if self.eat(close) {
                return Ok(items);
            }
            items.push(item(self)?);
            if !self.eat(b',') {
                if self.eat(close) {
                    return Ok(items);
                }
                return Err(format!(
                    "expected `,` or `{}` at byte {} of the header",
                    close as char, self.at
                ));
            }
        }
    }

    fn value(&mut self) -> Result<Literal, String> {
        self.skip_space();
        let rest = &self.text[self.at..];
        match rest.first() {
            Some(b'{') => {
                self.at += 1;
                let entries = self.items(b'}', |p| {
                    let key = match p.value()? {
                        Literal::Str(s) => s,
                        other => {
                            return Err(format!("a header key must be a string, not {other:?}"))
                        }
                    };
                    if !p.eat(b':') {
                        return Err(format!("expected `:` after the header key `{key}`"));
                    }
                    Ok((key, p.value()?))
                })?;
                Ok(Literal::Dict(entries))
            }
            Some(b'(') | Some(b'[') => {
                let close = if rest[0] == b'(' { b')' } else { b']' };
                self.at += 1;
                Ok(Literal::Tuple(self.items(close, Self::value)?))
            }
            Some(&q) if q == b'\'' || q == b'"' => {
                let end = rest[1..]
                    .iter()
                    .position(|&c| c == q)
                    .ok_or("a string in the header is not closed")?;
                let s = String::from_utf8_lossy(&rest[1..1 + end]).into_owned();
                self.at += end + 2;
                Ok(Literal::Str(s))
            }
            Some(c) if c.is_ascii_digit() => {
                let digits = rest.iter().take_while(|c| c.is_ascii_digit()).count();
                let text = String::from_utf8_lossy(&rest[..digits]).into_owned();
                self.at += digits;
                // Python 2 wrote long integers as `3L`.
                if self.text.get(self.at) == Some(&b'L') {
                    self.at += 1;
                }
                text.parse()
                    .map(Literal::Int)
                    .map_err(|_| format!("the number {text} in the header is too large"))
            }
            _ if rest.starts_with(b"True") => {
                self.at += 4;
                Ok(Literal::Bool(true))
            }
            _ if rest.starts_with(b"False") => {
                self.at += 5;
                Ok(Literal::Bool(false))
            }
            _ => Err(format!(
                "unexpected `{}` at byte {} of the header",
                String::from_utf8_lossy(&rest[..rest.len().min(8)]),
                self.at
            )),
        }
    }
}

/// How to turn one stored element into an `f64`.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Float,
    Signed,
    Unsigned,
    Bool,
}

/// `descr` (`'<f8'`, `'|u1'`, ...) as a kind, a size in bytes and whether it is big-endian.
fn dtype(descr: &str) -> Result<(Kind, usize, bool), String> {
    let unsupported = || {
        format!("the dtype `{descr}` is not supported: save floating-point, integer or boolean numbers (e.g. `a.astype(np.float64)`)")
    };
    let mut chars = descr.chars();
    let (order, rest) = match chars.next() {
        Some(c @ ('<' | '>' | '|' | '=')) => (c, chars.as_str()),
        _ => ('=', descr),
    };
    let big = order == '>' || (order == '=' && cfg!(target_endian = "big"));
    let mut chars = rest.chars();
    let kind = chars.next();
    let size: usize = chars.as_str().parse().map_err(|_| unsupported())?;
    let kind = match (kind, size) {
        (Some('f'), 4 | 8) => Kind::Float,
        (Some('i'), 1 | 2 | 4 | 8) => Kind::Signed,
        (Some('u'), 1 | 2 | 4 | 8) => Kind::Unsigned,
        (Some('b'), 1) => Kind::Bool,
        _ => return Err(unsupported()),
    };
    Ok((kind, size, big))
}

fn element(bytes: &[u8], kind: Kind, big: bool) -> f64 {
    let mut b = [0u8; 8];
    let n = bytes.len();
    if big {
        for (i, x) in bytes.iter().rev().enumerate() {
            b[i] = *x;
        }
    } else {
        b[..n].copy_from_slice(bytes);
    }
    match (kind, n) {
        (Kind::Float, 4) => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        (Kind::Float, _) => f64::from_le_bytes(b),
        (Kind::Signed, _) => {
            // Sign-extend from `n` bytes.
            let shift = 64 - 8 * n as u32;
            ((i64::from_le_bytes(b) << shift) >> shift) as f64
        }
        (Kind::Unsigned, _) => u64::from_le_bytes(b) as f64,
        (Kind::Bool, _) => f64::from(u8::from(b[0] != 0)),
    }
}

/// Reads an `.npy` file's bytes.
pub fn read_npy(bytes: &[u8]) -> Result<Array, String> {
    if !bytes.starts_with(NPY_MAGIC) {
        return Err(if is_zip(bytes) {
            "this is an .npz archive (several named arrays), not a single .npy array".to_string()
        } else {
            "not an .npy file: it does not start with the magic `\\x93NUMPY`".to_string()
        });
    }
    let truncated = || "the file is truncated inside its header".to_string();
    let major = *bytes.get(6).ok_or_else(truncated)?;
    let (length, start): (usize, usize) = match major {
        1 => {
            let b = bytes.get(8..10).ok_or_else(truncated)?;
            (usize::from(u16::from_le_bytes([b[0], b[1]])), 10)
        }
        2 | 3 => {
            let b = bytes.get(8..12).ok_or_else(truncated)?;
            (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize, 12)
        }
        v => {
            return Err(format!(
                "format version {v} is not supported (1, 2 and 3 are)"
            ))
        }
    };
    let header = bytes
        .get(start..start.saturating_add(length))
        .ok_or_else(truncated)?;
    let mut parser = LiteralParser {
        text: header,
        at: 0,
    };
    let Literal::Dict(entries) = parser.value()? else {
        return Err("the header is not a dict".to_string());
    };
    let get = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v);
    let descr = match get("descr") {
        Some(Literal::Str(s)) => s.clone(),
        Some(_) => {
            return Err("structured arrays (a `descr` with fields) are not supported".to_string())
        }
        None => return Err("the header has no `descr`".to_string()),
    };
    let fortran = match get("fortran_order") {
        Some(Literal::Bool(b)) => *b,
        _ => return Err("the header has no `fortran_order` True or False".to_string()),
    };
    let shape: Vec<usize> = match get("shape") {
        Some(Literal::Tuple(items)) => items
            .iter()
            .map(|i| match i {
                Literal::Int(n) => Ok(*n),
                _ => Err("the header's `shape` holds something other than a size".to_string()),
            })
            .collect::<Result<_, _>>()?,
        _ => return Err("the header has no `shape` tuple".to_string()),
    };
    let (kind, size, big) = dtype(&descr)?;
    let count = shape
        .iter()
        .try_fold(1usize, |a, &n| a.checked_mul(n))
        .ok_or("the shape's size overflows")?;
    let data = &bytes[start + length..];
    let want = count
        .checked_mul(size)
        .ok_or("the shape's size overflows")?;
    if data.len() != want {
        return Err(format!(
            "the shape {} of `{descr}` needs {want} bytes of data, but the file has {}{}",
            tuple(&shape),
            data.len(),
            if data.len() < want {
                " (truncated)"
            } else {
                ""
            }
        ));
    }
    let stored: Vec<f64> = data
        .chunks_exact(size)
        .map(|c| element(c, kind, big))
        .collect();
    let values = if fortran && shape.len() > 1 {
        // Fortran order: the first index varies fastest. Element (i0, ..., ik) sits at
        // Σ i_j · Π_{l<j} shape_l in the stored values.
        let mut values = Vec::with_capacity(count);
        let mut index = vec![0usize; shape.len()];
        for _ in 0..count {
            let mut at = 0;
            let mut stride = 1;
            for (i, n) in index.iter().zip(&shape) {
                at += i * stride;
                stride *= n;
            }
            values.push(stored[at]);
            // Advance the C-order index, last axis fastest.
            for axis in (0..shape.len()).rev() {
                index[axis] += 1;
                if index[axis] < shape[axis] {
                    break;
                }
                index[axis] = 0;
            }
        }
        values
    } else {
        stored
    };
    Ok(Array { shape, values })
}

/// CRC-32 (IEEE 802.3, the zip checksum).
fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut table = [0u32; 256];
        for (n, entry) in table.iter_mut().enumerate() {
            let mut c = n as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *entry = c;
        }
        table
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

/// The `.npz` bytes of named arrays (entries `NAME.npy`, stored), or why they cannot be
/// written (an entry or the archive past zip's 4 GiB without zip64).
pub fn write_npz(arrays: &[(String, Array)]) -> Result<Vec<u8>, String> {
    let too_large = || "the arrays are too large for an .npz without zip64 (4 GiB)".to_string();
    let mut out = Vec::new();
    let mut central = Vec::new();
    // 1980-01-01 00:00:00 in MS-DOS form, so the same arrays give the same bytes.
    let (time, date): (u16, u16) = (0, (1 << 5) | 1);
    for (name, array) in arrays {
        let data = write_npy(array);
        let name = format!("{name}.npy");
        let offset = u32::try_from(out.len()).map_err(|_| too_large())?;
        let size = u32::try_from(data.len()).map_err(|_| too_large())?;
        let name_len =
            u16::try_from(name.len()).map_err(|_| format!("the name `{name}` is too long"))?;
        let crc = crc32(&data);
        let common = |v: &mut Vec<u8>| {
            v.extend_from_slice(&20u16.to_le_bytes()); // version needed: 2.0
            v.extend_from_slice(&0u16.to_le_bytes()); // flags
            v.extend_from_slice(&0u16.to_le_bytes()); // method: stored
            v.extend_from_slice(&time.to_le_bytes());
            v.extend_from_slice(&date.to_le_bytes());
            v.extend_from_slice(&crc.to_le_bytes());
            v.extend_from_slice(&size.to_le_bytes()); // compressed
            v.extend_from_slice(&size.to_le_bytes()); // uncompressed
            v.extend_from_slice(&name_len.to_le_bytes());
            v.extend_from_slice(&0u16.to_le_bytes()); // extra length
        };
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        common(&mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        common(&mut central);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment length
        central.extend_from_slice(&0u16.to_le_bytes()); // disk number
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let entries = u16::try_from(arrays.len()).map_err(|_| "more than 65535 arrays".to_string())?;
    let central_offset = u32::try_from(out.len()).map_err(|_| too_large())?;
    let central_size = u32::try_from(central.len()).map_err(|_| too_large())?;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // this disk
    out.extend_from_slice(&0u16.to_le_bytes()); // disk of the central directory
    out.extend_from_slice(&entries.to_le_bytes());
    out.extend_from_slice(&entries.to_le_bytes());
    out.extend_from_slice(&central_size.to_le_bytes());
    out.extend_from_slice(&central_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment length
    Ok(out)
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    bytes
        .get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    bytes.get(at..at + 8).map(|b| {
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        u64::from_le_bytes(a)
    })
}

/// Zip entry methods: `np.savez` stores, `np.savez_compressed` deflates.
const STORED: u16 = 0;
const DEFLATED: u16 = 8;

/// Reads the arrays of an `.npz` archive, in the archive's order, names without `.npy`.
pub fn read_npz(bytes: &[u8]) -> Result<Vec<(String, Array)>, String> {
    let corrupt = |what: &str| format!("not a readable .npz archive: {what}");
    // The end-of-central-directory record: 22 bytes and a comment of at most 65535.
    let lowest = bytes.len().saturating_sub(22 + 0xFFFF);
    let end = (lowest..=bytes.len().saturating_sub(22))
        .rev()
        .find(|&i| u32_at(bytes, i) == Some(0x0605_4b50))
        .ok_or_else(|| corrupt("no end-of-central-directory record (truncated?)"))?;
    let mut entries = u64::from(u16_at(bytes, end + 10).unwrap_or(0));
    let mut at = u64::from(u32_at(bytes, end + 16).unwrap_or(0));
    if at == 0xFFFF_FFFF || entries == 0xFFFF {
        // Zip64: its locator sits just before the record and points at the zip64 record.
        let record = end
            .checked_sub(20)
            .filter(|&l| u32_at(bytes, l) == Some(0x0706_4b50))
            .and_then(|l| u64_at(bytes, l + 8))
            .and_then(|r| usize::try_from(r).ok())
            .filter(|&r| u32_at(bytes, r) == Some(0x0606_4b50))
            .ok_or_else(|| corrupt("a zip64 archive without its zip64 record"))?;
        entries = u64_at(bytes, record + 32).ok_or_else(|| corrupt("truncated zip64 record"))?;
        at = u64_at(bytes, record + 48).ok_or_else(|| corrupt("truncated zip64 record"))?;
    }
    let mut at = usize::try_from(at).map_err(|_| corrupt("bad central directory offset"))?;
    let mut arrays = Vec::new();
    for _ in 0..entries {
        let truncated = || corrupt("truncated central directory");
        if u32_at(bytes, at) != Some(0x0201_4b50) {
            return Err(truncated());
        }
        let method = u16_at(bytes, at + 10).ok_or_else(truncated)?;
        let crc = u32_at(bytes, at + 16).ok_or_else(truncated)?;
        let mut compressed = u64::from(u32_at(bytes, at + 20).ok_or_else(truncated)?);
        let mut size = u64::from(u32_at(bytes, at + 24).ok_or_else(truncated)?);
        let name_len = usize::from(u16_at(bytes, at + 28).ok_or_else(truncated)?);
        let extra_len = usize::from(u16_at(bytes, at + 30).ok_or_else(truncated)?);
        let comment_len = usize::from(u16_at(bytes, at + 32).ok_or_else(truncated)?);
        let mut offset = u64::from(u32_at(bytes, at + 42).ok_or_else(truncated)?);
        let name = bytes
            .get(at + 46..at + 46 + name_len)
            .ok_or_else(truncated)?;
        let name = String::from_utf8_lossy(name).into_owned();
        let extra = bytes
            .get(at + 46 + name_len..at + 46 + name_len + extra_len)
            .ok_or_else(truncated)?;
        // A zip64 extra field holds, in order, the sizes and the offset that are 0xFFFFFFFF.
        let mut e = 0;
        while e + 4 <= extra.len() {
            let id = u16_at(extra, e).unwrap_or(0);
            let len = usize::from(u16_at(extra, e + 2).unwrap_or(0));
            if id == 1 {
                let mut field = e + 4;
                for v in [&mut size, &mut compressed, &mut offset] {
                    if *v == 0xFFFF_FFFF {
                        *v = u64_at(extra, field).ok_or_else(truncated)?;
                        field += 8;
                    }
                }
            }
            e += 4 + len;
        }
        at += 46 + name_len + extra_len + comment_len;
        if method != STORED && method != DEFLATED {
            return Err(corrupt(&format!(
                "`{name}` uses zip compression method {method}; nodec reads stored and deflated entries (np.savez, np.savez_compressed)"
            )));
        }
        let offset = usize::try_from(offset).map_err(|_| truncated())?;
        let data_truncated = || corrupt(&format!("`{name}` is truncated"));
        if u32_at(bytes, offset) != Some(0x0403_4b50) {
            return Err(data_truncated());
        }
        let local_name = usize::from(u16_at(bytes, offset + 26).ok_or_else(data_truncated)?);
        let local_extra = usize::from(u16_at(bytes, offset + 28).ok_or_else(data_truncated)?);
        let start = offset + 30 + local_name + local_extra;
        let stored_len = usize::try_from(compressed).map_err(|_| data_truncated())?;
        let stored = bytes
            .get(start..start.saturating_add(stored_len))
            .ok_or_else(data_truncated)?;
        let size = usize::try_from(size).map_err(|_| data_truncated())?;
        let inflated;
        let data = if method == DEFLATED {
            // The declared size bounds the output, so a crafted archive cannot inflate past it.
            inflated = miniz_oxide::inflate::decompress_to_vec_with_limit(stored, size)
                .map_err(|e| corrupt(&format!("`{name}` does not inflate: {e}")))?;
            &inflated[..]
        } else {
            stored
        };
        if data.len() != size || crc32(data) != crc {
            return Err(corrupt(&format!("`{name}` fails its CRC-32 check")));
        }
        let array = read_npy(data).map_err(|e| format!("`{name}`: {e}"))?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        arrays.push((key, array));
    }
    Ok(arrays)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(descr: &str, fortran: bool, shape: &str) -> Vec<u8> {
        let h = format!(
            "{{'descr': '{descr}', 'fortran_order': {}, 'shape': {shape}, }}\n",
            if fortran { "True" } else { "False" }
        );
        let mut b = NPY_MAGIC.to_vec();
        b.extend_from_slice(&[1, 0]);
        b.extend_from_slice(&(h.len() as u16).to_le_bytes());
        b.extend_from_slice(h.as_bytes());
        b
    }

    #[test]
    fn npy_round_trips_with_an_aligned_header() {
        for shape in [vec![], vec![3], vec![2, 3], vec![2, 0, 4]] {
            let n: usize = shape.iter().product();
            let array = Array::new(
                shape.clone(),
                (0..n).map(|i| i as f64 * 0.1 - 0.3).collect(),
            );
            let bytes = write_npy(&array);
            let data_start = bytes.len() - 8 * n;
            assert_eq!(data_start % 64, 0, "{shape:?}");
            assert_eq!(bytes[data_start - 1], b'\n');
            assert_eq!(read_npy(&bytes).unwrap(), array);
        }
        let text =
            String::from_utf8_lossy(&write_npy(&Array::new(vec![3], vec![0.0; 3]))).into_owned();
        assert!(text.contains("'shape': (3,), }"), "{text}");
    }

    #[test]
    fn other_dtypes_and_fortran_order_are_converted() {
        let mut b = header("<i4", false, "(2,)");
        b.extend_from_slice(&(-3i32).to_le_bytes());
        b.extend_from_slice(&7i32.to_le_bytes());
        assert_eq!(read_npy(&b).unwrap().values, [-3.0, 7.0]);
        let mut b = header(">f4", false, "(1,)");
        b.extend_from_slice(&1.5f32.to_be_bytes());
        assert_eq!(read_npy(&b).unwrap().values, [1.5]);
        let mut b = header("|b1", false, "(2,)");
        b.extend_from_slice(&[1, 0]);
        assert_eq!(read_npy(&b).unwrap().values, [1.0, 0.0]);
        // [[1, 2, 3], [4, 5, 6]] stored column by column.
        let mut b = header("<f8", true, "(2, 3)");
        for v in [1.0f64, 4.0, 2.0, 5.0, 3.0, 6.0] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        let a = read_npy(&b).unwrap();
        assert_eq!(
            (a.shape, a.values),
            (vec![2, 3], vec![1., 2., 3., 4., 5., 6.])
        );
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let err = |b: &[u8]| read_npy(b).unwrap_err();
        assert!(err(b"hello").contains("magic"));
        assert!(err(b"\x93NUMPY\x01").contains("truncated"));
        assert!(err(&header("<c16", false, "(1,)")).contains("dtype `<c16` is not supported"));
        assert!(err(&header("<U3", false, "(1,)")).contains("not supported"));
        assert!(err(&header("<é8", false, "(1,)")).contains("not supported"));
        let mut b = header("<f8", false, "(2,)");
        b.extend_from_slice(&1.0f64.to_le_bytes());
        assert!(err(&b).contains("needs 16 bytes of data, but the file has 8 (truncated)"));
        let e = err(&header(
            "<f8",
            false,
            "(99999999999, 99999999999, 99999999999)",
        ));
        assert!(e.contains("overflows"), "{e}");
        assert!(err(&header("<f8", false, "(1, 'a')")).contains("shape"));
        let mut b = NPY_MAGIC.to_vec();
        b.extend_from_slice(&[1, 0, 5, 0]);
        b.extend_from_slice(b"{'de ");
        assert!(read_npy(&b).is_err());
        assert!(err(&write_npz(&[]).unwrap()).contains(".npz archive"));
    }

    #[test]
    fn npz_round_trips_and_checks_its_entries() {
        let arrays = vec![
            (
                "W".to_string(),
                Array::new(vec![2, 2], vec![1., 2., 3., 4.]),
            ),
            ("k".to_string(), Array::new(vec![], vec![0.5])),
        ];
        let bytes = write_npz(&arrays).unwrap();
        assert!(is_zip(&bytes));
        assert_eq!(read_npz(&bytes).unwrap(), arrays);
        assert_eq!(write_npz(&arrays).unwrap(), bytes, "deterministic bytes");
        // A flipped data byte fails the checksum; a cut archive has no end record.
        let mut bad = bytes.clone();
        bad[100] ^= 1;
        assert!(read_npz(&bad).unwrap_err().contains("CRC-32"));
        assert!(read_npz(&bytes[..bytes.len() - 30])
            .unwrap_err()
            .contains("truncated"));
        // A method other than stored or deflated is refused, naming it.
        let mut other = bytes.clone();
        let central = (0..other.len())
            .find(|&i| u32_at(&other, i) == Some(0x0201_4b50))
            .unwrap();
        other[central + 10] = 12; // bzip2
        assert!(read_npz(&other).unwrap_err().contains("method 12"));
    }

    /// `tests/data/npz/compressed.npz` was written the way `np.savez_compressed` writes (deflated
    /// zip64 members) by `make_compressed.py` beside it, which states the arrays read back here.
    #[test]
    fn compressed_archives_inflate_to_the_arrays_their_script_wrote() {
        let bytes = include_bytes!("../tests/data/npz/compressed.npz");
        let arrays = read_npz(bytes).unwrap();
        let names: Vec<&str> = arrays.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["W", "k", "ramp"]);
        assert_eq!(
            arrays[0].1,
            Array::new(vec![2, 3], vec![1.0, -2.0, 3.5, 0.25, 1e-300, 6.0])
        );
        assert_eq!(arrays[1].1, Array::new(vec![], vec![0.5]));
        let ramp: Vec<f64> = (0..1000).map(|i| 0.25 * i as f64).collect();
        assert_eq!(arrays[2].1, Array::new(vec![1000], ramp));
        // The members really are deflated (so this is not the stored path again) ...
        let central = (0..bytes.len())
            .find(|&i| u32_at(bytes, i) == Some(0x0201_4b50))
            .unwrap();
        assert_eq!(u16_at(bytes, central + 10), Some(DEFLATED));
        // ... and a flipped bit in any member's deflate stream (W's starts at byte 55, after
        // its 30-byte header, 5-byte name and 20-byte zip64 extra; k's at 208; ramp's at 334)
        // is an error, never a wrong array.
        for at in [100, 250, 400, 900] {
            let mut bad = bytes.to_vec();
            bad[at] ^= 0x10;
            assert!(read_npz(&bad).is_err(), "flipped byte {at} went unnoticed");
        }
    }

    #[test]
    fn crc32_matches_the_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
