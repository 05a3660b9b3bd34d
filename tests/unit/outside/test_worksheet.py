"""The portal worksheet: rows per item, the CSV the operator fills in and airgap reads back, and
the printable page."""

from __future__ import annotations

import csv
import io

import pytest

from airgap.model import RequestItem
from airgap.outside.worksheet import (
    COLUMNS,
    PortalTask,
    code_file_name,
    is_done,
    read_csv,
    render_csv,
    render_html,
    tasks_for,
)

TAG = "regid.2017-03.com.cisco.advantagek9,1.0_bd1da96e-ec1d-412b-a50e-53846b347d53"


def item(item_id: str, action: str, **params: object) -> RequestItem:
    device = {"hostname": "sw-1", "udi": {"pid": "ISR4331/K9", "sn": "FDO1"}}
    return RequestItem(item_id, action, device, params)


ITEMS = [
    item("i00001", "cisco.reserve", entitlements=[{"tag": TAG, "count": 2}]),
    item("i00002", "cisco.report_usage"),
    item("i00003", "cisco.return", return_code="CgSw-abc"),
]


def tasks() -> list[PortalTask]:
    return tasks_for(
        ITEMS,
        smart_account="example.com",
        default_virtual_account="Default",
        usage_file="UD_SA_1.tar.gz",
        device_files={"i00002": "dev_1_1.txt"},
    )


def test_each_portal_item_gets_a_row_with_what_to_do_and_where_to_save() -> None:
    rows = list(csv.DictReader(io.StringIO(render_csv(tasks()))))
    assert [r["item"] for r in rows] == ["i00001", "i00002", "i00003"]
    reserve, usage, give_back = rows
    assert reserve["save_as"] == "codes/i00001-ISR4331_K9-FDO1.txt" == code_file_name(ITEMS[0])
    assert reserve["entitlements"] == f"{TAG} x 2"
    assert usage["device_file"] == "dev_1_1.txt" and "UD_SA_1.tar.gz" in usage["task"]
    assert give_back["code"] == "CgSw-abc" and "done" in give_back["task"]
    assert {r["smart_account"] for r in rows} == {"example.com"}
    assert {r["done"] for r in rows} == {""}


def test_the_csv_reads_back_with_the_operators_done_cells() -> None:
    text = render_csv(tasks())
    rows = list(csv.DictReader(io.StringIO(text)))
    rows[2]["done"] = "Yes "
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    read = read_csv("\ufeff" + out.getvalue())  # a spreadsheet may add a byte order mark
    assert [(r.line, r.cells["item"], r.done) for r in read] == [
        (2, "i00001", False),
        (3, "i00002", False),
        (4, "i00003", True),
    ]


@pytest.mark.parametrize("cell", ["yes", "Y", "x", "done", "OK", "true", "1", "\u2713"])
def test_done_is_any_usual_tick(cell: str) -> None:
    assert is_done(cell)


@pytest.mark.parametrize("cell", ["", "no", "later", "0"])
def test_anything_else_is_not_done(cell: str) -> None:
    assert not is_done(cell)


def test_a_csv_that_is_not_the_worksheet_is_refused_with_its_line() -> None:
    with pytest.raises(ValueError, match="line 1"):
        read_csv("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match="line 2"):
        read_csv(",".join(COLUMNS) + "\n" + ",".join(["x"] * (len(COLUMNS) + 1)) + "\n")


def test_the_page_lists_every_task_and_what_is_left_escaped() -> None:
    html = render_html(
        tasks(),
        request_id="<req>",
        request_sha256="ab" * 32,
        usage_file="UD_SA_1.tar.gz",
        import_command="airgap outside portal-import r.airgap --from p -o resp.airgap",
        left=[("i00004", "bigiq.assign", "not Cisco")],
    )
    assert "&lt;req&gt;" in html and "<req>" not in html
    assert html.count('<td class="done">') == 3
    assert "Not for the portal" in html and "bigiq.assign" in html
    assert "airgap outside portal-import r.airgap --from p -o resp.airgap" in html
    assert "<script" not in html and "src=" not in html and "href=" not in html


def test_file_names_and_tags_wrap_at_their_parts_on_the_page() -> None:
    html = render_html(
        tasks(),
        request_id="r",
        request_sha256="ab" * 32,
        usage_file="UD_SA_1.tar.gz",
        import_command="airgap outside portal-import r.airgap --from p -o resp.airgap",
    )
    # A printed worksheet must not break a file name mid-word (a screenshot showed C930/0-24T),
    # nor overflow the page: break opportunities only at /, _ and , (hyphens break anyway).
    assert "codes/<wbr>i00001-ISR4331_<wbr>K9-FDO1.txt" in html
    assert "advantagek9,<wbr>1.0_<wbr>bd1da96e" in html
    assert "break-all" not in html
    assert html.replace("<wbr>", "").count("codes/i00001-ISR4331_K9-FDO1.txt") == 1
