//! The transforms' own rules, on events built here.

use super::mask::{Encoding, Technique};
use super::*;
use serde_json::json;
use tidemark_connectors::event::ColumnInfo;
use tidemark_connectors::Position;

fn key() -> keys::Key {
    keys::Key::parse("k", &hex::encode([1u8; 32])).expect("key")
}

fn transforms(filter: Option<&str>) -> Transformer {
    let spec = TransformSpec {
        tables: vec!["shop.cust*".into()],
        include: None,
        exclude: vec!["notes".into()],
        filter: filter.map(str::to_string),
        masks: vec![
            (
                "email".into(),
                Technique::Hash {
                    key: key(),
                    encoding: Encoding::Hex,
                },
            ),
            (
                "id".into(),
                Technique::Hash {
                    key: key(),
                    encoding: Encoding::Hex,
                },
            ),
        ],
    };
    Transformer::new(Arc::new(Transforms::compile(vec![spec]).expect("compiles")))
}

fn row(id: i64, email: &str, country: &str) -> Row {
    Row(vec![
        (Arc::from("id"), json!(id)),
        (Arc::from("email"), json!(email)),
        (Arc::from("country"), json!(country)),
        (Arc::from("notes"), json!("secret note")),
    ])
}

fn event(table: &str, op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
    let source = Arc::new(SourceInfo::new(
        "mysql",
        "p".into(),
        "shop".into(),
        "shop".into(),
        table.into(),
        0,
    ));
    let key = Row(vec![(Arc::from("id"), json!(7))]);
    ChangeEvent::row(
        op,
        before.map(Image::Values),
        after.map(Image::Values),
        Some(key),
        source,
        Position::postgres(1, 1),
        0,
    )
}

fn run(t: &mut Transformer, events: Vec<ChangeEvent>) -> Vec<ChangeEvent> {
    let mut batch = Batch { events, end: None };
    t.apply(&mut batch).expect("transforms");
    batch.events
}

#[test]
fn masks_reach_images_and_key_and_dropped_columns_vanish() {
    let mut t = transforms(None);
    let out = run(
        &mut t,
        vec![event(
            "customers",
            Op::Update,
            Some(row(7, "a@x.test", "DE")),
            Some(row(7, "b@x.test", "DE")),
        )],
    );
    let text = {
        let mut bytes = Vec::new();
        out[0].write_json(&mut bytes);
        String::from_utf8(bytes).expect("utf-8")
    };
    for raw in ["a@x.test", "b@x.test", "secret note", "\"notes\""] {
        assert!(!text.contains(raw), "{raw} in {text}");
    }
    let after = out[0].after.as_ref().expect("after").to_row().into_owned();
    let key = out[0].key.as_ref().expect("key");
    assert_eq!(
        after.get("id"),
        key.get("id"),
        "a masked key column is masked alike in the key block"
    );
    assert_eq!(after.get("country"), Some(&json!("DE")));
    // Other tables pass untouched.
    let other = run(
        &mut t,
        vec![event(
            "orders",
            Op::Create,
            None,
            Some(row(7, "a@x.test", "DE")),
        )],
    );
    assert_eq!(
        other[0]
            .after
            .as_ref()
            .expect("after")
            .to_row()
            .get("email"),
        Some(&json!("a@x.test"))
    );
}

#[test]
fn schema_events_list_the_kept_columns_and_filters_route_updates() {
    let mut t = transforms(Some("row.country == 'DE'"));
    let mut schema = ChangeEvent::schema(
        Arc::new(SourceInfo::new(
            "mysql",
            "p".into(),
            "shop".into(),
            "shop".into(),
            "customers".into(),
            0,
        )),
        Position::postgres(1, 1),
        None,
        Some(vec![
            ColumnInfo {
                name: "id".into(),
                type_name: "int".into(),
                key: true,
            },
            ColumnInfo {
                name: "notes".into(),
                type_name: "text".into(),
                key: false,
            },
        ]),
        0,
    );
    schema = run(&mut t, vec![schema]).remove(0);
    let names: Vec<&str> = schema.columns.iter().flatten().map(|c| &*c.name).collect();
    assert_eq!(names, ["id"]);
    let out = run(
        &mut t,
        vec![
            event(
                "customers",
                Op::Update,
                Some(row(7, "a", "DE")),
                Some(row(7, "a", "FR")),
            ),
            event(
                "customers",
                Op::Update,
                Some(row(7, "a", "FR")),
                Some(row(7, "a", "DE")),
            ),
            event("customers", Op::Create, None, Some(row(8, "a", "FR"))),
        ],
    );
    let ops: Vec<Op> = out.iter().map(|e| e.op).collect();
    assert_eq!(ops, [Op::Delete, Op::Create]);
    assert!(out[0].after.is_none() && out[1].before.is_none());
}

#[test]
fn a_value_that_does_not_fit_its_technique_names_table_column_and_position() {
    let spec = TransformSpec {
        tables: vec!["*".into()],
        include: None,
        exclude: vec![],
        filter: None,
        masks: vec![(
            "email".into(),
            Technique::Age {
                key: key(),
                days: 10,
            },
        )],
    };
    let mut t = Transformer::new(Arc::new(Transforms::compile(vec![spec]).expect("compiles")));
    let mut batch = Batch {
        events: vec![event(
            "customers",
            Op::Create,
            None,
            Some(row(1, "a@x", "DE")),
        )],
        end: None,
    };
    let error = t.apply(&mut batch).expect_err("age on text").to_string();
    assert!(
        error.contains("shop.customers") && error.contains("email") && error.contains("age"),
        "{error}"
    );
    assert!(
        !error.contains("a@x"),
        "the value stays out of the error: {error}"
    );
}

#[test]
fn globs_match_table_names() {
    assert!(glob("public.*", "public.orders"));
    assert!(glob("*.cust?mers", "shop.customers"));
    assert!(!glob("public.*", "shop.orders"));
    assert!(glob("a*b*c", "axxbyyc"));
    assert!(!glob("a*b*c", "axxbyy"));
}

#[test]
fn problems_name_missing_columns_and_unfit_types() {
    let spec = TransformSpec {
        tables: vec!["public.*".into()],
        include: None,
        exclude: vec!["gone".into()],
        filter: None,
        masks: vec![
            (
                "born".into(),
                Technique::Age {
                    key: key(),
                    days: 3,
                },
            ),
            ("doc".into(), Technique::Tokenize { key: key() }),
            (
                "email".into(),
                Technique::Hash {
                    key: key(),
                    encoding: Encoding::Hex,
                },
            ),
        ],
    };
    let t = Transforms::compile(vec![spec]).expect("compiles");
    let columns = [
        ("born", "text"),
        ("doc", "jsonb"),
        ("email", "character varying"),
    ]
    .map(|(c, t)| (c.to_string(), t.to_string()));
    let problems = t.problems("public", "people", &columns);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0]
        .contains("column born: age needs a date or timestamp column, and this one is text"));
    assert!(problems[1].contains("column doc: tokenize needs a scalar column"));
    assert!(problems[2].contains("has no column \"gone\" (exclude)"));
    assert!(
        t.problems("shop", "people", &columns).is_empty(),
        "no rule, no problem"
    );
}

#[test]
fn rendered_images_are_rewritten_member_by_member() {
    let mut t = transforms(None);
    let rendered =
        br#"{"id":7,"email":"a\"b@x.test","country":"D\u00e9","notes":"secret note","n":1.50}"#
            .to_vec();
    let source = Arc::new(SourceInfo::new(
        "mysql",
        "p".into(),
        "shop".into(),
        "shop".into(),
        "customers".into(),
        0,
    ));
    let event = ChangeEvent::row(
        Op::Create,
        None,
        Some(Image::Json(rendered)),
        None,
        source,
        Position::postgres(1, 1),
        0,
    );
    let out = run(&mut t, vec![event]);
    let Some(Image::Json(bytes)) = &out[0].after else {
        panic!("the image stays rendered");
    };
    let text = String::from_utf8(bytes.clone()).expect("utf-8");
    let parsed: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
    assert!(
        !text.contains("a\\\"b@x.test") && !text.contains("secret"),
        "{text}"
    );
    assert_eq!(parsed["email"].as_str().map(str::len), Some(64));
    assert_eq!(
        parsed["country"],
        json!("Dé"),
        "untouched members keep their text"
    );
    assert!(
        text.contains(r#""n":1.50"#),
        "numbers are copied byte for byte: {text}"
    );
    let names: Vec<&str> = parsed
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names.len(), 4, "notes dropped: {text}");
}
