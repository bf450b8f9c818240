//! A bounded reader of the pickles `torch.save` writes for state dicts: protocol 2 in the legacy
//! stream, protocols 2 to 5 in a zip archive's `data.pkl` (docs/semantics.md#weight-names).
//!
//! Checkpoints are untrusted files, so every resource a pickle can ask for is bounded before it
//! is taken, and breaking a bound is an error naming it, never a panic or an abort:
//! - a length field (strings, bytes, frames) is checked against the bytes actually left in the
//!   input before anything is allocated;
//! - `LONG1` integers hold at most 8 bytes (an `i64`), `LONG4` is refused;
//! - memo references (`BINGET`, and the copy `BINPUT` stores) copy the object, and every copy is
//!   charged, object by object and byte by byte, against [`MAX_OBJECTS`] and [`MAX_TEXT_BYTES`]
//!   for the whole pickle, so references to references cannot grow it exponentially; the
//!   result is a plain tree the caller can walk in time proportional to its size;
//! - objects nest at most [`MAX_DEPTH`] deep, so walking (and dropping) the tree cannot
//!   overflow the call stack;
//! - an opcode outside the ones PyTorch writes is an error naming it and its offset.
//!
//! Python objects are not built: a call (`REDUCE`, `NEWOBJ`) is kept as [`Object::Reduce`],
//! state set on an object (`BUILD`) as [`Object::Build`], and a persistent id (a storage) as
//! [`Object::PersistentLoad`]; `collections.OrderedDict()` and `defaultdict(...)` become plain
//! dicts, as the state dict's `OrderedDict` must.

use std::collections::HashMap;
use std::io::BufRead;

/// Objects (nodes of the result, memo copies included) one pickle may create.
pub(crate) const MAX_OBJECTS: u64 = 1 << 21;
/// Bytes of strings and byte strings one pickle may hold, memo copies included.
pub(crate) const MAX_TEXT_BYTES: u64 = 64 << 20;
/// How deep objects may nest (a state dict nests about 8 deep, wrapped ones a few more).
pub(crate) const MAX_DEPTH: u32 = 100;
/// Longest module or class name line of `GLOBAL`.
const MAX_LINE: usize = 1024;
/// Newest pickle protocol.
const MAX_PROTOCOL: u8 = 5;

/// A value of the pickle, as far as reading a state dict needs it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Object {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer (`BININT*`, `LONG1` up to 8 bytes).
    Int(i64),
    /// A float.
    Float(f64),
    /// A `str`.
    Unicode(String),
    /// A `bytes` / `bytearray` (or a Python 2 `str` that is not UTF-8).
    Bytes(Vec<u8>),
    /// A global (`module.name`): a class or function.
    Class {
        /// Its module.
        module_name: String,
        /// Its name in the module.
        class_name: String,
    },
    /// A tuple.
    Tuple(Vec<Object>),
    /// A list.
    List(Vec<Object>),
    /// A dict's entries in pickle order.
    Dict(Vec<(Object, Object)>),
    /// `callable(*args)`.
    Reduce {
        /// What is called.
        callable: Box<Object>,
        /// Its argument tuple.
        args: Box<Object>,
    },
    /// `callable.__setstate__(args)`.
    Build {
        /// The object.
        callable: Box<Object>,
        /// Its state.
        args: Box<Object>,
    },
    /// `persistent_load(id)`: PyTorch's storages.
    PersistentLoad(Box<Object>),
}

impl Object {
    /// A short description for error messages: scalars and names in full, containers by kind
    /// and length (an object can be large, its `Debug` form is not for messages).
    pub(crate) fn describe(&self) -> String {
        match self {
            Object::None => "None".into(),
            Object::Bool(b) => format!("{b}"),
            Object::Int(v) => format!("the integer {v}"),
            Object::Float(v) => format!("the float {v}"),
            Object::Unicode(s) if s.len() <= 64 => format!("the string {s:?}"),
            Object::Unicode(s) => format!("a string of {} bytes", s.len()),
            Object::Bytes(b) => format!("a byte string of {} bytes", b.len()),
            Object::Class {
                module_name,
                class_name,
            } => format!("the global {module_name}.{class_name}"),
            Object::Tuple(v) => format!("a tuple of {}", v.len()),
            Object::List(v) => format!("a list of {}", v.len()),
            Object::Dict(v) => format!("a dict of {}", v.len()),
            Object::Reduce { callable, .. } | Object::Build { callable, .. } => {
                format!("a Python object made by {}", callable.describe())
            }
            Object::PersistentLoad(_) => "a persistent id".into(),
        }
    }
}

/// Reads one pickle, up to its `STOP`, from `r`, which holds at most `limit` more bytes (the
/// bound for every length field); `origin` is the pickle's offset in the file, for messages.
/// On success `r` is just past the `STOP`.
pub(crate) fn parse<R: BufRead>(r: &mut R, limit: u64, origin: u64) -> Result<Object, String> {
    let mut machine = Machine::new(Input {
        inner: r,
        pos: 0,
        limit,
    });
    machine
        .run()
        .map_err(|e| format!("pickle at byte {}: {e}", origin + machine.op_start))
}

/// The input with its position and the bytes it may still hold.
struct Input<'a, R> {
    inner: &'a mut R,
    pos: u64,
    limit: u64,
}

impl<R: BufRead> Input<'_, R> {
    fn left(&self) -> u64 {
        self.limit - self.pos
    }

    /// `n` bytes, refused before allocating when fewer are left.
    fn bytes(&mut self, n: u64, what: &str) -> Result<Vec<u8>, String> {
        if n > self.left() {
            return Err(format!(
                "truncated: {what} needs {n} bytes but only {} are left",
                self.left()
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| format!("truncated in {what}"))?;
        self.pos += n;
        Ok(buf)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        a.copy_from_slice(&self.bytes(N as u64, what)?);
        Ok(a)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A newline-terminated line of at most [`MAX_LINE`] bytes, without the newline.
    fn line(&mut self, what: &str) -> Result<String, String> {
        let mut line = Vec::new();
        loop {
            match self.u8(what)? {
                b'\n' => break,
                _ if line.len() >= MAX_LINE => {
                    return Err(format!("{what} longer than {MAX_LINE} bytes"))
                }
                c => line.push(c),
            }
        }
        String::from_utf8(line).map_err(|_| format!("{what} is not UTF-8"))
    }
}

/// What an object costs: its nodes, its string bytes and how deep it nests.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: u64,
    text: u64,
    depth: u32,
}

impl Size {
    /// The size of a container of the children `self` already sums, once it holds `child`.
    fn add_child(&mut self, child: Size) {
        self.nodes += child.nodes;
        self.text += child.text;
        self.depth = self.depth.max(child.depth + 1);
    }
}

/// A stack or memo entry: an object and its size.
#[derive(Debug, Clone)]
struct Item {
    obj: Object,
    size: Size,
}

/// The unpickling machine: stack, mark positions, memo and what is left of the budget.
struct Machine<'a, R> {
    input: Input<'a, R>,
    stack: Vec<Item>,
    marks: Vec<usize>,
    memo: HashMap<u32, Item>,
    nodes: u64,
    text: u64,
    op_start: u64,
}

impl<'a, R: BufRead> Machine<'a, R> {
    fn new(input: Input<'a, R>) -> Self {
        Self {
            input,
            stack: Vec::new(),
            marks: Vec::new(),
            memo: HashMap::new(),
            nodes: 0,
            text: 0,
            op_start: 0,
        }
    }

    fn run(&mut self) -> Result<Object, String> {
        loop {
            self.op_start = self.input.pos;
            if self.input.left() == 0 {
                return Err("the pickle ends before its STOP".into());
            }
            let op = self.input.u8("opcode")?;
            if op == b'.' {
                return self.finish();
            }
            self.step(op)?;
        }
    }

    fn finish(&mut self) -> Result<Object, String> {
        match (self.stack.len(), self.marks.is_empty()) {
            (1, true) => Ok(self.stack.pop().map(|i| i.obj).unwrap_or(Object::None)),
            (0, _) => Err("STOP with an empty stack".into()),
            _ => Err(format!(
                "STOP with {} objects and {} marks left on the stack",
                self.stack.len(),
                self.marks.len()
            )),
        }
    }

    fn step(&mut self, op: u8) -> Result<(), String> {
        match op {
            0x80 => self.proto(),
            0x95 => self.frame(),
            b'c' => self.global(),
            0x93 => self.stack_global(),
            b'Q' => self.wrap(|id| Object::PersistentLoad(Box::new(id))),
            b'R' | 0x81 => self.call(),
            0x92 => self.new_obj_ex(),
            b'b' => self.build(),
            b'(' => self.mark(),
            b'0' => self.pop().map(drop),
            b'1' => self.pop_mark().map(drop),
            b'}' => self.push_leaf(Object::Dict(Vec::new()), 0),
            b']' => self.push_leaf(Object::List(Vec::new()), 0),
            b')' => self.push_leaf(Object::Tuple(Vec::new()), 0),
            b'd' => self.dict_from_mark(),
            b'l' => self.list_from_mark(Object::List),
            b't' => self.list_from_mark(Object::Tuple),
            0x85..=0x87 => self.small_tuple(usize::from(op - 0x84)),
            b's' => self.set_item(),
            b'u' => self.set_items(),
            b'a' => self.append(),
            b'e' => self.appends(),
            _ => self.scalar(op),
        }
    }

    /// The opcodes that push a scalar, a string or a memo entry (or touch the memo).
    fn scalar(&mut self, op: u8) -> Result<(), String> {
        let input = &mut self.input;
        match op {
            b'N' => self.push_leaf(Object::None, 0),
            0x88 => self.push_leaf(Object::Bool(true), 0),
            0x89 => self.push_leaf(Object::Bool(false), 0),
            b'J' => {
                let v = i32::from_le_bytes(input.array("BININT")?);
                self.push_leaf(Object::Int(v.into()), 0)
            }
            b'K' => {
                let v = input.u8("BININT1")?;
                self.push_leaf(Object::Int(v.into()), 0)
            }
            b'M' => {
                let v = u16::from_le_bytes(input.array("BININT2")?);
                self.push_leaf(Object::Int(v.into()), 0)
            }
            0x8a => self.long1(),
            b'G' => {
                let v = f64::from_be_bytes(input.array("BINFLOAT")?);
                self.push_leaf(Object::Float(v), 0)
            }
            b'X' | 0x8c | 0x8d => self.unicode(op),
            b'U' | b'T' | b'B' | b'C' | 0x8e | 0x96 => self.byte_string(op),
            b'q' | b'r' | 0x94 => {
                let id = self.memo_index(op)?;
                self.memo_put(id)
            }
            b'h' | b'j' => {
                let id = self.memo_index(op)?;
                self.memo_get(id)
            }
            _ => Err(format!("unsupported opcode 0x{op:02x}")),
        }
    }

    /// The memo index a `*PUT`, `*GET` or `MEMOIZE` (the next free index) refers to.
    fn memo_index(&mut self, op: u8) -> Result<u32, String> {
        match op {
            b'q' => Ok(self.input.u8("BINPUT")?.into()),
            b'h' => Ok(self.input.u8("BINGET")?.into()),
            b'r' => self.input.u32("LONG_BINPUT"),
            b'j' => self.input.u32("LONG_BINGET"),
            _ => u32::try_from(self.memo.len()).map_err(|_| "memo full".into()),
        }
    }

    fn proto(&mut self) -> Result<(), String> {
        let version = self.input.u8("PROTO")?;
        if version > MAX_PROTOCOL {
            return Err(format!("unsupported pickle protocol {version}"));
        }
        Ok(())
    }

    /// `FRAME` only announces how many bytes follow; they are read opcode by opcode.
    fn frame(&mut self) -> Result<(), String> {
        let len = self.input.u64("FRAME")?;
        if len > self.input.left() {
            return Err(format!(
                "FRAME declares {len} bytes but only {} are left",
                self.input.left()
            ));
        }
        Ok(())
    }

    fn global(&mut self) -> Result<(), String> {
        let module_name = self.input.line("GLOBAL module name")?;
        let class_name = self.input.line("GLOBAL name")?;
        let text = (module_name.len() + class_name.len()) as u64;
        self.push_leaf(
            Object::Class {
                module_name,
                class_name,
            },
            text,
        )
    }

    fn stack_global(&mut self) -> Result<(), String> {
        let name = self.pop()?;
        let module = self.pop()?;
        match (module.obj, name.obj) {
            (Object::Unicode(module_name), Object::Unicode(class_name)) => {
                let text = module.size.text + name.size.text;
                self.push_leaf(
                    Object::Class {
                        module_name,
                        class_name,
                    },
                    text,
                )
            }
            _ => Err("STACK_GLOBAL needs two strings".into()),
        }
    }

    fn long1(&mut self) -> Result<(), String> {
        let n = self.input.u8("LONG1")?;
        if n > 8 {
            return Err(format!(
                "LONG1 of {n} bytes: integers above 8 bytes are not supported"
            ));
        }
        let bytes = self.input.bytes(n.into(), "LONG1")?;
        // Little-endian two's complement, sign-extended from its last byte.
        let fill = if bytes.last().is_some_and(|b| b & 0x80 != 0) {
            0xff
        } else {
            0
        };
        let mut le = [fill; 8];
        le[..bytes.len()].copy_from_slice(&bytes);
        self.push_leaf(Object::Int(i64::from_le_bytes(le)), 0)
    }

    fn unicode(&mut self, op: u8) -> Result<(), String> {
        let (name, len) = match op {
            0x8c => (
                "SHORT_BINUNICODE",
                self.input.u8("SHORT_BINUNICODE")?.into(),
            ),
            b'X' => ("BINUNICODE", self.input.u32("BINUNICODE")?.into()),
            _ => ("BINUNICODE8", self.input.u64("BINUNICODE8")?),
        };
        let bytes = self.input.bytes(len, name)?;
        let s = String::from_utf8(bytes).map_err(|_| format!("{name} is not UTF-8"))?;
        self.push_leaf(Object::Unicode(s), len)
    }

    /// Byte strings; a Python 2 `str` (`SHORT_BINSTRING`, `BINSTRING`) reads as text when it
    /// is UTF-8, as Python 3 reads PyTorch's legacy files.
    fn byte_string(&mut self, op: u8) -> Result<(), String> {
        let (name, len): (&str, u64) = match op {
            b'U' => ("SHORT_BINSTRING", self.input.u8("SHORT_BINSTRING")?.into()),
            b'C' => ("SHORT_BINBYTES", self.input.u8("SHORT_BINBYTES")?.into()),
            b'T' => {
                let len = i32::from_le_bytes(self.input.array("BINSTRING")?);
                let len = u64::try_from(len).map_err(|_| "BINSTRING of negative length")?;
                ("BINSTRING", len)
            }
            b'B' => ("BINBYTES", self.input.u32("BINBYTES")?.into()),
            0x8e => ("BINBYTES8", self.input.u64("BINBYTES8")?),
            _ => ("BYTEARRAY8", self.input.u64("BYTEARRAY8")?),
        };
        let bytes = self.input.bytes(len, name)?;
        let obj = match (op, String::from_utf8(bytes)) {
            (b'U' | b'T', Ok(s)) => Object::Unicode(s),
            (_, Ok(s)) => Object::Bytes(s.into_bytes()),
            (_, Err(e)) => Object::Bytes(e.into_bytes()),
        };
        self.push_leaf(obj, len)
    }

    /// Charges `nodes` objects and `text` string bytes against the pickle's budget.
    fn charge(&mut self, nodes: u64, text: u64) -> Result<(), String> {
        self.nodes += nodes;
        self.text += text;
        if self.nodes > MAX_OBJECTS {
            return Err(format!(
                "more than {MAX_OBJECTS} objects (memo references included)"
            ));
        }
        if self.text > MAX_TEXT_BYTES {
            return Err(format!(
                "more than {MAX_TEXT_BYTES} bytes of strings (memo references included)"
            ));
        }
        Ok(())
    }

    fn push_leaf(&mut self, obj: Object, text: u64) -> Result<(), String> {
        self.charge(1, text)?;
        self.stack.push(Item {
            obj,
            size: Size {
                nodes: 1,
                text,
                depth: 1,
            },
        });
        Ok(())
    }

    /// Pushes a new object holding `children` (already charged), checking the nesting depth.
    fn push_parent(&mut self, obj: Object, children: &[Size]) -> Result<(), String> {
        self.charge(1, 0)?;
        let mut size = Size {
            nodes: 1,
            text: 0,
            depth: 1,
        };
        children.iter().for_each(|c| size.add_child(*c));
        check_depth(size)?;
        self.stack.push(Item { obj, size });
        Ok(())
    }

    fn pop(&mut self) -> Result<Item, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn mark(&mut self) -> Result<(), String> {
        self.charge(1, 0)?;
        self.marks.push(self.stack.len());
        Ok(())
    }

    fn pop_mark(&mut self) -> Result<Vec<Item>, String> {
        let at = self.marks.pop().ok_or("no MARK to pop to")?;
        Ok(self.stack.split_off(at))
    }

    /// The top of the stack, to add to (a list or dict under construction).
    fn top(&mut self) -> Result<&mut Item, String> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return Err("stack underflow".into());
        }
        self.stack
            .last_mut()
            .ok_or_else(|| "stack underflow".into())
    }

    fn wrap(&mut self, make: impl FnOnce(Object) -> Object) -> Result<(), String> {
        let inner = self.pop()?;
        self.push_parent(make(inner.obj), &[inner.size])
    }

    fn small_tuple(&mut self, n: usize) -> Result<(), String> {
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(self.pop()?);
        }
        items.reverse();
        self.push_container(items, Object::Tuple)
    }

    fn list_from_mark(&mut self, make: fn(Vec<Object>) -> Object) -> Result<(), String> {
        let items = self.pop_mark()?;
        self.push_container(items, make)
    }

    fn push_container(
        &mut self,
        items: Vec<Item>,
        make: fn(Vec<Object>) -> Object,
    ) -> Result<(), String> {
        let sizes: Vec<Size> = items.iter().map(|i| i.size).collect();
        let objs = items.into_iter().map(|i| i.obj).collect();
        self.push_parent(make(objs), &sizes)
    }

    fn dict_from_mark(&mut self) -> Result<(), String> {
        let items = self.pop_mark()?;
        self.push_leaf(Object::Dict(Vec::new()), 0)?;
        self.insert_pairs(items)
    }

    fn set_item(&mut self) -> Result<(), String> {
        let value = self.pop()?;
        let key = self.pop()?;
        self.insert_pairs(vec![key, value])
    }

    fn set_items(&mut self) -> Result<(), String> {
        let items = self.pop_mark()?;
        self.insert_pairs(items)
    }

    /// Adds `key, value, key, value, ...` to the dict on top of the stack.
    fn insert_pairs(&mut self, items: Vec<Item>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("SETITEMS with an odd number of objects".into());
        }
        let top = self.top()?;
        let Object::Dict(entries) = &mut top.obj else {
            return Err(format!("SETITEM(S) on {}, not a dict", top.obj.describe()));
        };
        let mut items = items.into_iter();
        while let (Some(k), Some(v)) = (items.next(), items.next()) {
            top.size.add_child(k.size);
            top.size.add_child(v.size);
            entries.push((k.obj, v.obj));
        }
        check_depth(top.size)
    }

    fn append(&mut self) -> Result<(), String> {
        let value = self.pop()?;
        self.extend_list(vec![value])
    }

    fn appends(&mut self) -> Result<(), String> {
        let items = self.pop_mark()?;
        self.extend_list(items)
    }

    fn extend_list(&mut self, items: Vec<Item>) -> Result<(), String> {
        let top = self.top()?;
        let Object::List(list) = &mut top.obj else {
            return Err(format!("APPEND(S) on {}, not a list", top.obj.describe()));
        };
        for item in items {
            top.size.add_child(item.size);
            list.push(item.obj);
        }
        check_depth(top.size)
    }

    /// `REDUCE` and `NEWOBJ`: `callable(*args)`; an `OrderedDict` or `defaultdict` is a dict.
    fn call(&mut self) -> Result<(), String> {
        let args = self.pop()?;
        let callable = self.pop()?;
        if let Object::Class {
            module_name,
            class_name,
        } = &callable.obj
        {
            if module_name == "collections"
                && matches!(class_name.as_str(), "OrderedDict" | "defaultdict")
            {
                return self.push_leaf(Object::Dict(Vec::new()), 0);
            }
        }
        let sizes = [callable.size, args.size];
        let obj = Object::Reduce {
            callable: Box::new(callable.obj),
            args: Box::new(args.obj),
        };
        self.push_parent(obj, &sizes)
    }

    /// `NEWOBJ_EX`: `cls.__new__(cls, *args, **kwargs)`; the keyword arguments are dropped.
    fn new_obj_ex(&mut self) -> Result<(), String> {
        self.pop()?;
        self.call()
    }

    /// `BUILD`: a dict's state merges into a dict, anything else is kept as [`Object::Build`].
    fn build(&mut self) -> Result<(), String> {
        let state = self.pop()?;
        let target = self.pop()?;
        match (target.obj, state.obj) {
            (Object::Dict(entries), Object::Dict(more)) => {
                let mut size = target.size;
                size.add_child(state.size);
                size.nodes -= 1;
                let mut entries = entries;
                entries.extend(more);
                check_depth(size)?;
                self.stack.push(Item {
                    obj: Object::Dict(entries),
                    size,
                });
                Ok(())
            }
            (callable, args) => {
                let sizes = [target.size, state.size];
                let obj = Object::Build {
                    callable: Box::new(callable),
                    args: Box::new(args),
                };
                self.push_parent(obj, &sizes)
            }
        }
    }

    /// Stores a copy of the top of the stack (charged like any copy).
    fn memo_put(&mut self, id: u32) -> Result<(), String> {
        let item = self.top()?.clone();
        self.charge(item.size.nodes, item.size.text)?;
        self.memo.insert(id, item);
        Ok(())
    }

    /// Pushes a copy of a memo entry, charged against the budget.
    fn memo_get(&mut self, id: u32) -> Result<(), String> {
        let item = self
            .memo
            .get(&id)
            .ok_or_else(|| format!("memo entry {id} read before it is stored"))?;
        let size = item.size;
        self.charge(size.nodes, size.text)?;
        let item = self.memo[&id].clone();
        self.stack.push(item);
        Ok(())
    }
}

fn check_depth(size: Size) -> Result<(), String> {
    if size.depth > MAX_DEPTH {
        return Err(format!("objects nest deeper than {MAX_DEPTH} levels"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_bytes(bytes: &[u8]) -> Result<Object, String> {
        parse(&mut &bytes[..], bytes.len() as u64, 0)
    }

    fn unicode(s: &str) -> Object {
        Object::Unicode(s.into())
    }

    /// `{'a': 5, 'b': [True, None, -1.5], 'c': 'a'}` as protocol 2 writes it, with memo
    /// entries and a reference to one.
    const SMALL_DICT: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x05X\x01\x00\x00\x00bq\x02]q\x03(\x88NG\xbf\xf8\x00\x00\x00\x00\x00\x00eX\x01\x00\x00\x00ch\x01u.";

    #[test]
    fn reads_a_protocol_2_dict() {
        let obj = parse_bytes(SMALL_DICT).unwrap();
        let list = Object::List(vec![Object::Bool(true), Object::None, Object::Float(-1.5)]);
        assert_eq!(
            obj,
            Object::Dict(vec![
                (unicode("a"), Object::Int(5)),
                (unicode("b"), list),
                (unicode("c"), unicode("a")),
            ])
        );
    }

    #[test]
    fn reads_protocol_4_framing_and_stack_global() {
        // PROTO 4, FRAME, SHORT_BINUNICODE x2, MEMOIZE, STACK_GLOBAL, EMPTY_TUPLE, REDUCE.
        let body = b"\x8c\x0bcollections\x94\x8c\x0bOrderedDict\x94\x93)R\x94.";
        let mut p = b"\x80\x04\x95".to_vec();
        p.extend_from_slice(&(body.len() as u64).to_le_bytes());
        p.extend_from_slice(body);
        assert_eq!(parse_bytes(&p).unwrap(), Object::Dict(vec![]));
        let p = b"\x80\x04\x8c\x05torch\x8c\x0cFloatStorage\x93.";
        assert_eq!(
            parse_bytes(p).unwrap(),
            Object::Class {
                module_name: "torch".into(),
                class_name: "FloatStorage".into()
            }
        );
    }

    #[test]
    fn long1_reads_up_to_eight_bytes_and_refuses_more() {
        let long1 = |bytes: &[u8]| {
            let mut p = vec![0x80, 2, 0x8a, bytes.len() as u8];
            p.extend_from_slice(bytes);
            p.push(b'.');
            parse_bytes(&p)
        };
        assert_eq!(long1(&[]).unwrap(), Object::Int(0));
        assert_eq!(long1(&[0xff]).unwrap(), Object::Int(-1));
        assert_eq!(long1(&[0x00, 0x80]).unwrap(), Object::Int(-32768));
        assert_eq!(long1(&[0x80, 0x00]).unwrap(), Object::Int(128));
        let max = i64::MAX.to_le_bytes();
        assert_eq!(long1(&max).unwrap(), Object::Int(i64::MAX));
        let err = long1(&[0xff; 9]).unwrap_err();
        assert!(err.contains("LONG1 of 9 bytes"), "{err}");
        // 254 bytes: what candle's parser shifted by 254 x 8 bits.
        let err = long1(&[0x01; 254]).unwrap_err();
        assert!(err.contains("LONG1 of 254 bytes"), "{err}");
    }

    #[test]
    fn huge_declared_lengths_are_refused_before_allocating() {
        let cases: [(&[u8], &str); 6] = [
            (
                b"X\xff\xff\xff\xffabc.",
                "BINUNICODE needs 4294967295 bytes",
            ),
            (
                b"\x8d\xff\xff\xff\xff\xff\xff\xff\xffabc.",
                "BINUNICODE8 needs 18446744073709551615 bytes",
            ),
            (b"B\xff\xff\xff\x7fabc.", "BINBYTES needs 2147483647 bytes"),
            (b"T\xff\xff\xff\x7fabc.", "BINSTRING needs 2147483647 bytes"),
            (b"T\xff\xff\xff\xffabc.", "BINSTRING of negative length"),
            (
                b"\x95\xff\xff\xff\xff\xff\xff\xff\x7f.",
                "FRAME declares 9223372036854775807 bytes",
            ),
        ];
        for (pickle, want) in cases {
            let err = parse_bytes(pickle).unwrap_err();
            assert!(err.contains(want), "{err}");
        }
        // A length that fits the bytes left reads them.
        assert_eq!(
            parse_bytes(b"C\x03abc.").unwrap(),
            Object::Bytes(b"abc".to_vec())
        );
    }

    /// `[]`, then 40 times: a tuple of two references to the last memo entry, memoised in its
    /// place; deep copies would hold 2^40 lists.
    #[test]
    fn a_memo_bomb_runs_out_of_budget() {
        let mut p = b"\x80\x02]q\x00".to_vec();
        for _ in 0..40 {
            p.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        p.push(b'.');
        let err = parse_bytes(&p).unwrap_err();
        assert!(
            err.contains(&format!("more than {MAX_OBJECTS} objects")),
            "{err}"
        );
        // The same with long strings exhausts the string budget first.
        let mut p = b"\x80\x02X\x00\x00\x10\x00".to_vec();
        p.extend(std::iter::repeat_n(b'a', 1 << 20));
        p.extend_from_slice(b"q\x00");
        for _ in 0..10 {
            p.extend_from_slice(b"h\x00h\x00\x86q\x00");
        }
        p.push(b'.');
        let err = parse_bytes(&p).unwrap_err();
        assert!(err.contains("bytes of strings"), "{err}");
    }

    #[test]
    fn nesting_is_bounded() {
        let nested = |levels: usize| {
            let mut p = b"\x80\x02]".to_vec();
            p.extend(std::iter::repeat_n(0x85u8, levels));
            p.push(b'.');
            parse_bytes(&p)
        };
        assert!(nested(MAX_DEPTH as usize - 1).is_ok());
        let err = nested(100_000).unwrap_err();
        assert!(err.contains("nest deeper than"), "{err}");
        // Nesting by appending lists into lists counts as well.
        let mut p = b"\x80\x02".to_vec();
        p.extend(std::iter::repeat_n(b']', 200));
        p.extend(std::iter::repeat_n(b'a', 199));
        p.push(b'.');
        let err = parse_bytes(&p).unwrap_err();
        assert!(err.contains("nest deeper than"), "{err}");
    }

    #[test]
    fn truncated_pickles_are_errors() {
        for keep in 0..SMALL_DICT.len() {
            let err = parse_bytes(&SMALL_DICT[..keep]).unwrap_err();
            assert!(err.starts_with("pickle at byte"), "{keep}: {err}");
        }
        // A limit below the bytes present is truncation too.
        let err = parse(&mut &SMALL_DICT[..], 10, 0).unwrap_err();
        assert!(
            err.contains("truncated") || err.contains("before its STOP"),
            "{err}"
        );
    }

    #[test]
    fn unknown_opcodes_and_malformed_stacks_are_named() {
        let err = parse_bytes(b"\x80\x02N\xff.").unwrap_err();
        assert_eq!(err, "pickle at byte 3: unsupported opcode 0xff");
        let err = parse(&mut &b"\x80\x02\x8b\x00"[..], 4, 100).unwrap_err();
        assert_eq!(err, "pickle at byte 102: unsupported opcode 0x8b");
        for (pickle, want) in [
            (&b"\x80\x06N."[..], "unsupported pickle protocol 6"),
            (b"t.", "no MARK"),
            (b"K\x01K\x02a.", "not a list"),
            (b"h\x07.", "memo entry 7"),
            (b"NN.", "2 objects"),
            (b".", "empty stack"),
            (b"(N\x86.", "stack underflow"),
            (b"}K\x01u.", "no MARK"),
            (b"c\x00", "truncated"),
        ] {
            let err = parse_bytes(pickle).unwrap_err();
            assert!(err.contains(want), "{pickle:?}: {err}");
        }
    }
}
