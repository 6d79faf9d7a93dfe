//! Finding and checking the `component:run/run#run` export of a Limes function.

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, ComponentExportIndex, Type};

use crate::Error;

/// The interface a Limes function exports, as the original Limes defined it.
pub const RUN_INTERFACE: &str = "component:run/run";
/// The function inside [`RUN_INTERFACE`].
pub const RUN_FUNCTION: &str = "run";
const EXPECTED: &str = "func(args: string) -> string";

/// Finds `component:run/run#run` and checks it is `func(string) -> string`, so that a mistyped
/// function fails at deploy time with a clear message rather than at its first invocation.
pub(crate) fn find_run(component: &Component) -> Result<ComponentExportIndex, Error> {
    let missing = |export: &str| Error::MissingExport {
        export: export.to_owned(),
    };
    let (item, interface) = component
        .get_export(None, RUN_INTERFACE)
        .ok_or_else(|| missing(RUN_INTERFACE))?;
    let full_name = format!("{RUN_INTERFACE}#{RUN_FUNCTION}");
    if !matches!(item, ComponentItem::ComponentInstance(_)) {
        return Err(wrong(
            &full_name,
            format!("{RUN_INTERFACE} is {}, not an interface", item_kind(&item)),
        ));
    }
    let (item, run) = component
        .get_export(Some(&interface), RUN_FUNCTION)
        .ok_or_else(|| missing(&full_name))?;
    match item {
        ComponentItem::ComponentFunc(func) if is_string_to_string(&func) => Ok(run),
        ComponentItem::ComponentFunc(func) => Err(wrong(&full_name, describe_func(&func))),
        other => Err(wrong(&full_name, item_kind(&other).to_owned())),
    }
}

fn wrong(export: &str, found: String) -> Error {
    Error::WrongSignature {
        export: export.to_owned(),
        expected: EXPECTED.to_owned(),
        found,
    }
}

fn is_string_to_string(func: &ComponentFunc) -> bool {
    let params: Vec<_> = func.params().map(|(_, ty)| ty).collect();
    let results: Vec<_> = func.results().collect();
    matches!(params.as_slice(), [Type::String]) && matches!(results.as_slice(), [Type::String])
}

fn describe_func(func: &ComponentFunc) -> String {
    let params: Vec<String> = func
        .params()
        .map(|(name, ty)| format!("{name}: {}", describe(&ty)))
        .collect();
    let results: Vec<String> = func.results().map(|ty| describe(&ty)).collect();
    match results.as_slice() {
        [] => format!("func({})", params.join(", ")),
        [one] => format!("func({}) -> {one}", params.join(", ")),
        many => format!("func({}) -> ({})", params.join(", "), many.join(", ")),
    }
}

/// A WIT-like name for a type, enough to tell a user what they exported.
fn describe(ty: &Type) -> String {
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(list) => format!("list<{}>", describe(&list.ty())),
        Type::Option(option) => format!("option<{}>", describe(&option.ty())),
        other => {
            let debug = format!("{other:?}");
            debug
                .split(['(', ' ', '{'])
                .next()
                .unwrap_or("type")
                .to_lowercase()
        }
    }
}

fn item_kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "a function",
        ComponentItem::CoreFunc(_) => "a core function",
        ComponentItem::Module(_) => "a core module",
        ComponentItem::Component(_) => "a component",
        ComponentItem::ComponentInstance(_) => "an interface",
        ComponentItem::Type(_) => "a type",
        ComponentItem::Resource(_) => "a resource",
    }
}
