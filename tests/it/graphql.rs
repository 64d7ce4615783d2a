//! Every GraphQL document the daemon sends, checked against Panther's real schema
//! (`../shared/panther/panther.graphql`) with apollo-compiler: a field Panther does not have, a wrong
//! argument or an unaliased `type` in the `origin` union fails here.

use apollo_compiler::validation::Valid;
use apollo_compiler::{ExecutableDocument, Schema};
use panther_triage::panther::graphql::{batch_document, DOCUMENTS, MAX_COMMENT_BATCH};

pub fn schema() -> Valid<Schema> {
    let path = crate::shared().join("panther/panther.graphql");
    let sdl = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Schema::parse_and_validate(sdl, "panther.graphql").unwrap_or_else(|e| panic!("Panther's schema: {}", e.errors))
}

/// The validation errors of `doc`, empty when Panther's schema accepts it.
pub fn errors(schema: &Valid<Schema>, doc: &str) -> String {
    match ExecutableDocument::parse_and_validate(schema, doc, "document.graphql") {
        Ok(_) => String::new(),
        Err(e) => e.errors.to_string(),
    }
}

#[test]
fn every_document_validates_against_panthers_schema() {
    let schema = schema();
    for (name, doc) in DOCUMENTS {
        assert_eq!(errors(&schema, doc), "", "{name} does not validate:\n{doc}");
        assert!(doc.contains(name), "{name} is the operation's name");
    }
    for n in 1..=MAX_COMMENT_BATCH {
        let doc = batch_document(n);
        assert_eq!(errors(&schema, &doc), "", "the batch of {n} does not validate:\n{doc}");
    }
}

#[test]
fn the_validator_refuses_what_panther_would() {
    let schema = schema();
    // A field Panther's Alert does not have.
    let unknown = "query { alert(id: \"a\") { id eventCount } }";
    assert!(errors(&schema, unknown).contains("eventCount"), "{}", errors(&schema, unknown));
    // `type` unaliased in two members of the origin union: DetectionType! against SystemErrorType!.
    let clash = "query { alert(id: \"a\") { origin { ... on Detection { type } ... on SystemError { type } } } }";
    assert_ne!(errors(&schema, clash), "");
    // pageSize is an Int.
    let bad_arg = "query { alerts(input: {pageSize: \"many\"}) { edges { node { id } } } }";
    assert_ne!(errors(&schema, bad_arg), "");
}

#[test]
fn the_schema_the_fake_serves_is_panthers_byte_for_byte() {
    let shared = std::fs::read(crate::shared().join("panther/panther.graphql")).unwrap();
    let ours = std::fs::read(crate::repo().join("schema/panther.graphql")).unwrap();
    assert!(shared == ours, "schema/panther.graphql differs from ../shared/panther/panther.graphql: copy it again");
}
