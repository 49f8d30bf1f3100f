use super::*;

fn parse(text: &str) -> Result<Vec<Object>, FileError> {
    parse_file(Path::new("test.yaml"), text)
}

#[test]
fn multi_document_file() {
    let objects = parse(
        "# leading comment\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: sa, namespace: a}\n",
    )
    .unwrap();
    let keys: Vec<String> = objects.iter().map(|o| o.key().to_string()).collect();
    assert_eq!(keys, ["Namespace a", "ServiceAccount a/sa"]);
}

#[test]
fn list_kinds_are_expanded() {
    let objects = parse(
        "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: b}\n",
    )
    .unwrap();
    assert_eq!(objects.len(), 2);
    let err = parse("apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: a, colour: red}\n")
        .unwrap_err();
    assert_eq!((err.line, err.column), (6, 23), "{err}");
    assert_eq!(err.path, "items[0].metadata.colour");
}

#[test]
fn seed_destination_rule_is_rejected_at_its_kind_line() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ok\n---\napiVersion: networking.istio.io/v1alpha3\nkind:DestinationRule\nmetadata:\nname:my-service\nspec:\nhost:my-service.default.svc.cluster.local\n";
    let err = parse(text).unwrap_err();
    assert_eq!((err.line, err.column), (7, 1), "{err}");
    assert!(
        err.message
            .contains("`kind:DestinationRule` has no space after ':'"),
        "{err}"
    );
    assert!(err.to_string().starts_with("test.yaml:7:1: "), "{err}");
}

#[test]
fn glued_key_inside_metadata() {
    let err = parse("apiVersion: v1\nkind: Pod\nmetadata:\n  name:web\n").unwrap_err();
    assert_eq!((err.line, err.column), (4, 3), "{err}");
    assert!(err.message.contains("no space after ':'"), "{err}");
    assert_eq!(err.path, "metadata");
}

#[test]
fn type_errors_carry_the_file_line_object_and_path() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nstatus:\n  podIP: 10.0.0.300\n";
    let err = parse(text).unwrap_err();
    assert_eq!((err.line, err.column), (10, 10), "{err}");
    assert_eq!(err.path, "status.podIP");
    assert_eq!(err.object.as_deref(), Some("Pod default/web"));
    assert_eq!(
        err.to_string(),
        format!(
            "test.yaml:10:10: Pod default/web: status.podIP: {}",
            err.message
        )
    );
}

#[test]
fn missing_kind_and_wrong_api_version() {
    let err = parse("\n\napiVersion: v1\nmetadata: {name: a}\n").unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.message.contains("no `kind`"), "{err}");
    let err = parse("apiVersion: apps/v1\nkind: Pod\nmetadata: {name: a}\n").unwrap_err();
    assert!(err.message.contains("served as `v1`"), "{err}");
    assert_eq!(err.line, 1);
    let err =
        parse("apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata: {name: a}\n")
            .unwrap_err();
    assert!(err.message.contains("`networking.istio.io/v1`"), "{err}");
}

#[test]
fn unknown_kinds_are_skipped() {
    let objects = parse("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n").unwrap();
    assert!(objects.is_empty());
}

#[test]
fn urls_and_block_scalars_are_not_glued_keys() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n  annotations:\n    docs: |\n      see:this\n    link: http://x\n";
    assert_eq!(parse(text).unwrap().len(), 1);
    assert!(!looks_like_glued_key("http://example.com"));
    assert!(looks_like_glued_key("simple:ROUND_ROBIN"));
}

#[test]
fn one_bad_object_does_not_reject_the_others() {
    let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: B}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n";
    let outcomes = parse_outcomes(Path::new("t.yaml"), text).unwrap();
    assert!(matches!(outcomes[0], Outcome::Object(_)));
    let Outcome::Rejected { key, error } = &outcomes[1] else {
        panic!("{outcomes:?}");
    };
    assert_eq!(key.as_ref().unwrap().to_string(), "Namespace B");
    assert_eq!(error.line, 7);
    assert_eq!(error.path, "metadata.name");
    assert!(matches!(outcomes[2], Outcome::Object(_)));
}

#[test]
fn all_value_errors_are_listed() {
    let text = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: x}\nspec:\n  hosts: [r]\n  http:\n  - route:\n    - destination: {host: r, subset: v1}\n      weight: 60\n    - destination: {host: r, subset: v2}\n      weight: 50\n  - match: [{uri: {regex: '[a-'}}]\n    route: [{destination: {host: r}}]\n";
    let errors = all_errors(Path::new("t.yaml"), text);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(errors[0].path, "spec.http[0].route");
    assert_eq!(
        errors[0].message,
        "route weights sum to 110 (60 + 50), must be 100"
    );
    assert_eq!(errors[0].line, 8);
    assert_eq!(errors[1].path, "spec.http[1].match[0].uri.regex");
    assert!(
        errors[1]
            .message
            .starts_with("regex `[a-` does not compile: "),
        "{}",
        errors[1]
    );
    assert_eq!(errors[1].line, 12);
}

#[test]
fn direct_response_bytes_must_be_base64() {
    let vs = |body: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: r, namespace: a}}\nspec:\n  hosts: [r]\n  http:\n  - directResponse: {{status: 200, body: {{bytes: '{body}'}}}}\n"
        )
    };
    assert!(parse(&vs("aGVsbG8=")).is_ok());
    let err = parse(&vs("not base64!")).unwrap_err();
    assert_eq!(err.path, "spec.http[0].directResponse.body.bytes", "{err}");
    assert!(err.message.starts_with("not base64"), "{err}");
}
