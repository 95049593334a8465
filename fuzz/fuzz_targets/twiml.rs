//! Any text the agent says, under any public address: the TwiML sent to
//! Twilio is well-formed XML, and parsed back with an XML parser it holds
//! exactly that text (less what XML cannot carry) and those URLs.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use voxflow::fuzzing::{hook_url, twiml_hang_up, twiml_say_and_gather};

const RUN_ID: &str = "0f8fad5b-d9cb-469f-a165-70867728950e";

#[derive(Arbitrary, Debug)]
struct Input {
    text: String,
    public: String,
    silences: u32,
    hang_up: Option<bool>,
}

/// `text` as XML 1.0 can hold it: characters outside its `Char` production
/// cannot be written at all, escaped or not.
fn xml_text(text: &str) -> String {
    text.chars()
        .filter(|&c| {
            matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
        })
        .collect()
}

fn parse(twiml: &str) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(twiml).unwrap_or_else(|e| panic!("{e}: {twiml:?}"));
    assert_eq!(doc.root_element().tag_name().name(), "Response");
    doc
}

fn children<'a>(doc: &'a roxmltree::Document<'a>) -> Vec<roxmltree::Node<'a, 'a>> {
    doc.root_element()
        .children()
        .filter(|n| n.is_element())
        .collect()
}

/// An element's whole text, as the parser decoded it.
fn text_of(node: roxmltree::Node<'_, '_>) -> String {
    node.children().filter_map(|n| n.text()).collect()
}

fuzz_target!(|input: Input| {
    let said = xml_text(&input.text);
    match input.hang_up {
        None => {
            let twiml = twiml_say_and_gather(&input.public, RUN_ID, &input.text, input.silences);
            let doc = parse(&twiml);
            let nodes = children(&doc);
            let names: Vec<_> = nodes.iter().map(|n| n.tag_name().name()).collect();
            assert_eq!(names, ["Say", "Gather", "Redirect"]);
            assert_eq!(text_of(nodes[0]), said);
            let gather = xml_text(&hook_url(&input.public, "gather", RUN_ID));
            assert_eq!(nodes[1].attribute("action"), Some(gather.as_str()));
            assert_eq!(nodes[1].attribute("input"), Some("speech"));
            let next = input.silences.saturating_add(1);
            assert_eq!(text_of(nodes[2]), format!("{gather}?silence={next}"));
        }
        Some(with_text) => {
            let twiml = twiml_hang_up(with_text.then_some(input.text.as_str()));
            let doc = parse(&twiml);
            let nodes = children(&doc);
            let names: Vec<_> = nodes.iter().map(|n| n.tag_name().name()).collect();
            if with_text {
                assert_eq!(names, ["Say", "Hangup"]);
                assert_eq!(text_of(nodes[0]), said);
            } else {
                assert_eq!(names, ["Hangup"]);
            }
        }
    }
});
