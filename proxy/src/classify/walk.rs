//! A complete walk over a pg_query parse tree that collects what routing needs: function
//! calls, relations, locking clauses, `INTO` clauses and data-modifying statements.
//!
//! pg_query's tree types all derive `serde::Serialize`, so [`Walk`] is a `Serializer` that
//! writes nothing and visits every field of every node. Unlike a hand-written visitor it
//! cannot miss a place where a function call may hide (window frames, `ROWS FROM`,
//! `JSON_TABLE`, aggregate `FILTER`s, ...), including node types added by later PostgreSQL
//! versions. Recursion depth is bounded by the tree depth, which prost's decoder limits.

use serde::ser::{self, Serialize};

use super::policy::FuncName;

/// Yes/no facts about a subtree.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Facts {
    /// A `FOR UPDATE/SHARE` clause.
    pub(super) locking: bool,
    /// `SELECT ... INTO`.
    pub(super) into: bool,
    /// A nested INSERT/UPDATE/DELETE/MERGE (a data-modifying CTE).
    pub(super) modifying: bool,
}

/// What a string field is being captured as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Capture {
    None,
    FuncName,
    Schema,
    Relation,
}

/// The collector. Reusable: [`Walk::take_facts`] resets the facts between subtrees, while
/// calls and tables accumulate.
#[derive(Debug)]
pub(super) struct Walk {
    facts: Facts,
    /// Function calls, in order of appearance.
    pub(super) calls: Vec<FuncName>,
    /// Relations: the bare name, and `schema.name` when qualified.
    pub(super) tables: Vec<String>,
    capture: Capture,
    name_parts: Vec<String>,
    schema: String,
    relation: String,
}

impl Walk {
    pub(super) fn new() -> Walk {
        Walk {
            facts: Facts::default(),
            calls: Vec::new(),
            tables: Vec::new(),
            capture: Capture::None,
            name_parts: Vec::new(),
            schema: String::new(),
            relation: String::new(),
        }
    }

    /// Visits `node` and everything below it.
    pub(super) fn visit<T: Serialize + ?Sized>(&mut self, node: &T) {
        // Walk's serializer never fails.
        let _ = node.serialize(&mut *self);
    }

    /// The facts gathered since the last call.
    pub(super) fn take_facts(&mut self) -> Facts {
        std::mem::take(&mut self.facts)
    }

    fn enter_struct(&mut self, name: &'static str) {
        match name {
            "LockingClause" => self.facts.locking = true,
            "IntoClause" => self.facts.into = true,
            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt" => self.facts.modifying = true,
            _ => {}
        }
    }

    fn leave_struct(&mut self, name: &'static str) {
        if name != "RangeVar" {
            return;
        }
        let relation = std::mem::take(&mut self.relation);
        let schema = std::mem::take(&mut self.schema);
        if relation.is_empty() {
            return;
        }
        if !schema.is_empty() {
            self.tables.push(format!("{schema}.{relation}"));
        }
        self.tables.push(relation);
    }

    fn string(&mut self, value: &str) {
        match self.capture {
            Capture::None => {}
            Capture::FuncName => self.name_parts.push(value.to_owned()),
            Capture::Schema => value.clone_into(&mut self.schema),
            Capture::Relation => value.clone_into(&mut self.relation),
        }
    }

    /// The capture mode for field `field` of struct `owner`.
    fn capture_for(&self, owner: &'static str, field: &'static str) -> Capture {
        match (owner, field) {
            ("FuncCall", "funcname") => Capture::FuncName,
            ("RangeVar", "schemaname") => Capture::Schema,
            ("RangeVar", "relname") => Capture::Relation,
            // A name list's items are `Node { node: String { sval } }`: keep capturing.
            ("Node", "node") | ("String", "sval") => self.capture,
            _ => Capture::None,
        }
    }

    fn field<T: Serialize + ?Sized>(&mut self, owner: &'static str, key: &'static str, value: &T) {
        let capture = self.capture_for(owner, key);
        let saved = std::mem::replace(&mut self.capture, capture);
        self.visit(value);
        self.capture = saved;
        if capture == Capture::FuncName && saved != Capture::FuncName {
            let parts = std::mem::take(&mut self.name_parts);
            self.calls.extend(FuncName::from_parts(parts));
        }
    }
}

/// The walk never fails; serde needs an error type anyway.
#[derive(Debug)]
pub(super) struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("unreachable")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: std::fmt::Display>(_msg: T) -> Never {
        Never
    }
}

/// A struct being walked: remembers its name to decide what its fields mean.
pub(super) struct StructWalk<'w> {
    walk: &'w mut Walk,
    name: &'static str,
}

impl ser::SerializeStruct for StructWalk<'_> {
    type Ok = ();
    type Error = Never;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.walk.field(self.name, key, value);
        Ok(())
    }

    fn end(self) -> Result<(), Never> {
        self.walk.leave_struct(self.name);
        Ok(())
    }
}

impl ser::SerializeStructVariant for StructWalk<'_> {
    type Ok = ();
    type Error = Never;

    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.walk.field(self.name, key, value);
        Ok(())
    }

    fn end(self) -> Result<(), Never> {
        self.walk.leave_struct(self.name);
        Ok(())
    }
}

/// Sequences, tuples and maps: visit every element.
macro_rules! visit_elements {
    ($($trait:ident :: $method:ident),* $(,)?) => {$(
        impl ser::$trait for &mut Walk {
            type Ok = ();
            type Error = Never;

            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
                self.visit(value);
                Ok(())
            }

            fn end(self) -> Result<(), Never> {
                Ok(())
            }
        }
    )*};
}

visit_elements!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field,
);

impl ser::SerializeMap for &mut Walk {
    type Ok = ();
    type Error = Never;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Never> {
        self.visit(key);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Never> {
        self.visit(value);
        Ok(())
    }

    fn end(self) -> Result<(), Never> {
        Ok(())
    }
}

/// Scalars carry nothing of interest, except strings being captured.
macro_rules! ignore_scalars {
    ($($method:ident : $ty:ty),* $(,)?) => {$(
        fn $method(self, _value: $ty) -> Result<(), Never> {
            Ok(())
        }
    )*};
}

impl<'w> ser::Serializer for &'w mut Walk {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = StructWalk<'w>;
    type SerializeStructVariant = StructWalk<'w>;

    ignore_scalars!(
        serialize_bool: bool,
        serialize_i8: i8,
        serialize_i16: i16,
        serialize_i32: i32,
        serialize_i64: i64,
        serialize_u8: u8,
        serialize_u16: u16,
        serialize_u32: u32,
        serialize_u64: u64,
        serialize_f32: f32,
        serialize_f64: f64,
        serialize_char: char,
        serialize_bytes: &[u8],
    );

    fn serialize_str(self, value: &str) -> Result<(), Never> {
        self.string(value);
        Ok(())
    }

    fn serialize_none(self) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Never> {
        self.visit(value);
        Ok(())
    }

    fn serialize_unit(self) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
    ) -> Result<(), Never> {
        Ok(())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.visit(value);
        Ok(())
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        value: &T,
    ) -> Result<(), Never> {
        self.visit(value);
        Ok(())
    }

    fn serialize_seq(self, _len: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_map(self, _len: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }

    fn serialize_struct(self, name: &'static str, _len: usize) -> Result<StructWalk<'w>, Never> {
        self.enter_struct(name);
        Ok(StructWalk { walk: self, name })
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<StructWalk<'w>, Never> {
        self.enter_struct(name);
        Ok(StructWalk { walk: self, name })
    }
}
