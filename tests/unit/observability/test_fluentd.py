"""The FluentD configuration Sextant renders per deployment, checked for its structure.

FluentD cannot be obtained here, so the rendered text is parsed into its directive tree with a
small parser following FluentD's configuration syntax (`<section arg>` ... `</section>`,
`name value` parameters, `#` comments) and the tree is checked: the sections a pipeline needs,
their required parameters, the deployment's name everywhere it must be, and no tag pattern or
path of one deployment that would take another deployment's logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from app.observability import fluentd
from app.observability.fluentd import KubernetesContainers, LocalFiles

ES_URL = "http://elasticsearch:9200"


@dataclass
class Directive:
    """One `<name arg>` section with its parameters and nested sections."""

    name: str
    arg: str = ""
    params: dict[str, str] = field(default_factory=dict)
    children: list[Directive] = field(default_factory=list)

    def all(self, name: str) -> list[Directive]:
        """Direct children named `name`."""
        return [c for c in self.children if c.name == name]

    def one(self, name: str) -> Directive:
        """The single direct child named `name`."""
        found = self.all(name)
        assert len(found) == 1, f"expected one <{name}> in <{self.name}>, found {len(found)}"
        return found[0]


_OPEN = re.compile(r"^<([a-z_]+)(?:\s+([^>]*))?>$")
_CLOSE = re.compile(r"^</([a-z_]+)>$")
_PARAM = re.compile(r"^(@?[A-Za-z_][\w.]*)(?:\s+(.*))?$")


def parse(text: str) -> Directive:
    """Parse FluentD configuration text; AssertionError on unbalanced or malformed lines."""
    root = Directive("ROOT")
    stack = [root]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if opened := _OPEN.match(line):
            section = Directive(opened.group(1), (opened.group(2) or "").strip())
            stack[-1].children.append(section)
            stack.append(section)
        elif closed := _CLOSE.match(line):
            assert len(stack) > 1, f"line {number}: </{closed.group(1)}> closes nothing"
            assert stack[-1].name == closed.group(1), (
                f"line {number}: </{closed.group(1)}> closes <{stack[-1].name}>"
            )
            stack.pop()
        elif param := _PARAM.match(line):
            key, value = param.group(1), (param.group(2) or "").strip()
            assert key not in stack[-1].params, f"line {number}: {key} set twice"
            stack[-1].params[key] = value
        else:
            raise AssertionError(f"line {number}: not FluentD syntax: {raw!r}")
    assert len(stack) == 1, f"<{stack[-1].name}> is never closed"
    return root


def tag_matches(pattern: str, tag: str) -> bool:
    """FluentD's match semantics: `*` is one tag part, `**` zero or more parts."""
    regex = ""
    for i, part in enumerate(pattern.split(".")):
        if part == "**":
            regex += r"(?:\.[^.]+)*" if i else r"(?:[^.]+(?:\.[^.]+)*)?"
        else:
            piece = re.escape(part).replace(r"\*", "[^.]*")
            regex += ("" if i == 0 else r"\.") + piece
    # `a.**` also matches `a`; the leading separator of `**` is optional.
    return re.fullmatch(regex, tag) is not None


def path_matches(glob: str, path: str) -> bool:
    """in_tail's glob: `*` never crosses a `/`."""
    regex = "".join("[^/]*" if c == "*" else re.escape(c) for c in glob)
    return re.fullmatch(regex, path) is not None


def kubernetes(deployment: str = "etl", workspace: str = "data-team") -> Directive:
    return parse(fluentd.render(deployment, workspace, elasticsearch_url=ES_URL))


def local(deployment: str = "etl") -> Directive:
    source = LocalFiles("/var/lib/sextant")
    return parse(fluentd.render(deployment, "data-team", elasticsearch_url=ES_URL, source=source))


def emitted_tag(source: Directive, path: str) -> str:
    """The tag in_tail gives a line of `path`: `*` in its tag becomes the path with dots."""
    return source.params["tag"].replace("*", path.strip("/").replace("/", "."))


def test_the_parser_rejects_an_unclosed_section() -> None:
    with pytest.raises(AssertionError, match="never closed"):
        parse("<source>\n  @type tail\n")
    with pytest.raises(AssertionError, match="closes <match>"):
        parse("<match a.**>\n</filter>\n")


@pytest.mark.parametrize(
    ("pattern", "tag", "expected"),
    [
        ("sextant.etl.**", "sextant.etl.container.var.log.x", True),
        ("sextant.etl.**", "sextant.etl-prod.container.x", False),
        ("sextant.etl.container.**", "sextant.etl.local.x", False),
        ("a.*", "a.b.c", False),
    ],
)
def test_tag_semantics_used_by_these_tests(pattern: str, tag: str, expected: bool) -> None:
    assert tag_matches(pattern, tag) is expected


def test_kubernetes_pipeline_has_source_filters_and_one_output_in_order() -> None:
    root = kubernetes()
    kinds = [(d.name, d.params["@type"]) for d in root.children]
    assert kinds == [
        ("source", "tail"),
        ("filter", "kubernetes_metadata"),
        ("filter", "grep"),
        ("filter", "record_transformer"),
        ("filter", "parser"),
        ("filter", "record_transformer"),
        ("match", "elasticsearch_data_stream"),
    ]


def test_kubernetes_source_tails_only_the_deployments_namespace() -> None:
    source = kubernetes().one("source")
    assert source.params["path"] == "/var/log/containers/*_sextant-etl_*.log"
    assert source.params["pos_file"].endswith("sextant-etl.containers.pos")
    assert source.one("parse").params["@type"] == "regexp"
    ours = "/var/log/containers/scheduler-0_sextant-etl_scheduler-" + "a" * 64 + ".log"
    theirs = "/var/log/containers/scheduler-0_sextant-etl-prod_scheduler-" + "b" * 64 + ".log"
    assert path_matches(source.params["path"], ours)
    assert not path_matches(source.params["path"], theirs)


def test_kubernetes_metadata_is_added_and_only_airflow_components_are_kept() -> None:
    root = kubernetes()
    filters = root.all("filter")
    assert filters[0].params["@type"] == "kubernetes_metadata"
    grep = filters[1]
    keys = {r.params["key"]: r.params["pattern"] for r in grep.all("regexp")}
    assert keys["$['kubernetes']['namespace_name']"] == "/^sextant-etl$/"
    components = keys["$['kubernetes']['labels']['sextant.io/component']"]
    allowed = re.compile(components.strip("/"))
    for component in ("scheduler", "api_server", "dag_processor", "triggerer", "workers"):
        assert allowed.match(component), component
    for other in ("redis", "pgbouncer", "statsd", "flower", "scheduler-sidecar"):
        assert not allowed.match(other), other


def test_json_lines_are_parsed_and_kept_when_not_json() -> None:
    parser = kubernetes().all("filter")[3]
    assert parser.params["@type"] == "parser"
    assert parser.params["key_name"] == "log"
    assert parser.params["reserve_data"] == "true"
    assert parser.one("parse").params["@type"] == "json"


def test_log_id_offset_and_timestamp_are_derived_only_when_missing() -> None:
    transformer = kubernetes().all("filter")[4]
    assert transformer.params["enable_ruby"] == "true"
    record = transformer.one("record").params
    assert record["log_id"].startswith('${record["log_id"] || ')
    # Airflow's default template, map_index -1 for an unmapped task.
    assert (
        """[record["dag_id"], '-', record["task_id"], '-', record["run_id"], '-', """
        """(record["map_index"] || -1), '-', record["try_number"]].join"""
    ) in record["log_id"]
    assert record["offset"].startswith('${record["offset"] || ')
    assert "time.nsec" in record["offset"]
    assert record["@timestamp"].startswith('${record["timestamp"] || ')
    assert record["deployment"] == "etl"
    assert record["workspace"] == "data-team"


def test_ruby_placeholders_hold_no_closing_brace() -> None:
    # record_transformer ends a `${...}` placeholder at the first `}`.
    for filter_ in kubernetes().all("filter") + local().all("filter"):
        for record in filter_.all("record"):
            for name, value in record.params.items():
                if "${" in value:
                    inner = value[value.index("${") + 2 :]
                    assert inner.count("}") == 1, (name, value)
                    assert inner.endswith("}"), (name, value)


def test_output_writes_to_the_deployments_data_stream_with_create() -> None:
    match = kubernetes().one("match")
    assert match.arg == "sextant.etl.**"
    assert match.params["@type"] == "elasticsearch_data_stream"
    assert match.params["data_stream_name"] == "airflow-logs-etl"
    # Sextant's template by name, so the plugin creates no template or ILM policy of its own.
    assert match.params["data_stream_template_name"] == "airflow-logs-etl"
    assert match.params["hosts"] == ES_URL
    buffer = match.one("buffer")
    assert buffer.params["@type"] == "file"
    assert buffer.params["path"].endswith("/etl/buffer/sextant-etl")


def test_credentials_never_reach_the_file() -> None:
    text = fluentd.render("etl", "data-team", elasticsearch_url="https://user:s3cret@es:9200/")
    assert "s3cret" not in text
    assert "user:" not in text
    match = parse(text).one("match")
    assert match.params["hosts"] == "https://es:9200"
    assert match.params["password"] == "\"#{ENV['FLUENT_ELASTICSEARCH_PASSWORD']}\""


def test_every_filter_and_match_applies_to_this_deployment_only() -> None:
    etl, etl_prod = kubernetes("etl"), kubernetes("etl-prod")
    etl_tag = emitted_tag(etl.one("source"), "/var/log/containers/s_sextant-etl_c-1.log")
    prod_tag = emitted_tag(etl_prod.one("source"), "/var/log/containers/s_sextant-etl-prod_c.log")
    for section in etl.all("filter") + etl.all("match"):
        pattern = section.arg
        assert tag_matches(pattern, etl_tag), pattern
        assert not tag_matches(pattern, prod_tag), pattern
    for section in etl_prod.all("filter") + etl_prod.all("match"):
        assert not tag_matches(section.arg, etl_tag), section.arg


def test_ids_positions_and_buffers_differ_between_deployments() -> None:
    def identities(root: Directive) -> set[str]:
        found = {d.params["@id"] for d in root.children}
        found |= {d.params["pos_file"] for d in root.all("source")}
        found |= {d.one("buffer").params["path"] for d in root.all("match")}
        return found

    etl, prod = identities(kubernetes("etl")), identities(kubernetes("etl-prod"))
    assert len(etl) == len(kubernetes("etl").children) + 2
    assert not etl & prod


def test_local_source_tails_the_deployments_log_files() -> None:
    root = local()
    source = root.one("source")
    assert source.params["path"] == "/var/lib/sextant/etl/logs/*.log"
    assert source.params["path_key"] == "source_file"
    assert not path_matches(source.params["path"], "/var/lib/sextant/etl-prod/logs/scheduler.log")
    assert [d.params["@type"] for d in root.all("filter")] == [
        "record_transformer",
        "grep",
        "parser",
        "record_transformer",
    ]
    assert "kubernetes_metadata" not in fluentd.render(
        "etl", "data-team", elasticsearch_url=ES_URL, source=LocalFiles("/srv")
    )
    assert root.one("match").params["data_stream_name"] == "airflow-logs-etl"


def test_a_custom_log_id_template_is_followed() -> None:
    fields, expression = fluentd.log_id_ruby("{dag_id}/{task_id}_{try_number}")
    assert fields == '[record["dag_id"], record["task_id"], record["try_number"]]'
    assert expression == (
        """[record["dag_id"], '/', record["task_id"], '_', record["try_number"]].join"""
    )
    with pytest.raises(ValueError, match=r"str\.format"):
        fluentd.log_id_ruby("{{ ti.dag_id }}")


@pytest.mark.parametrize("name", ["etl\n<match **>", "ETL", "etl}", "a" * 0])
def test_names_that_could_break_the_file_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="DNS-1123"):
        fluentd.render(name, "data-team", elasticsearch_url=ES_URL)


def test_rendering_is_deterministic_and_leaves_no_placeholder() -> None:
    first = fluentd.render("etl", "data-team", elasticsearch_url=ES_URL)
    assert first == fluentd.render("etl", "data-team", elasticsearch_url=ES_URL)
    assert "{{" not in first
    assert "}}" not in first
    custom = KubernetesContainers(container_log_dir="/logs/", state_dir="/state")
    text = fluentd.render("etl", "data-team", elasticsearch_url=ES_URL, source=custom)
    assert parse(text).one("source").params["path"] == "/logs/*_sextant-etl_*.log"


def test_committed_examples_are_what_the_code_renders() -> None:
    examples = Path(fluentd.FLUENTD_DIR) / "examples"
    for name, text in fluentd.examples().items():
        assert (examples / name).read_text() == text, f"fluentd/examples/{name} is stale"
    assert sorted(p.name for p in examples.iterdir()) == sorted(fluentd.examples())
