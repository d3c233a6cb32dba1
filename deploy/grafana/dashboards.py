"""Grafana dashboards as code: writes deploy/grafana/dashboards/*.json (`make dashboards`).

Four dashboards over the corridor metric contract (streams/worker/metrics.py, docs/semantics.md):

* corridor-overview     on-time rate, overdue, transit p50/p90/p95, traffic per corridor
* corridor-bottlenecks  stage dwell percentiles, time beyond target per corridor x stage, fleet bottleneck
* corridor-customs      import clearance p50/p90 per destination, share cleared within target (and
                        its floor), holds per 1,000 arrivals, parcels waiting by age, by import
                        regime, on time with and without customs, regime changes as annotations
* corridor-workers      events/s, consumer lag, rejected events by reason, rebalances, up

Every worker exports only the partitions it owns, so every query aggregates with `sum by (...)`
across instances; the fleet bottleneck is `topk by (corridor) (1, sum by (corridor, stage)
(corridor_stage_excess_seconds))`, never the per-worker `corridor_bottleneck_stage`.

The datasource is the `datasource` variable (type prometheus), whose default is the provisioned
datasource uid `prometheus` (deploy/grafana/provisioning/datasources/prometheus.yml).

The output is deterministic (sorted keys, fixed ids, no timestamps): tests/ops/test_deploy.py
checks that the committed JSON is what this file produces now.

    python deploy/grafana/dashboards.py            # write the JSON files
    python deploy/grafana/dashboards.py --check    # exit 1 if a committed file is out of date
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm
from grafana_foundation_sdk.models import prometheus as pm

OUT_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE_UID = "prometheus"          # the provisioned datasource's uid
JOB = "corridor-workers"               # scrape job of the workers (deploy/prometheus/prometheus.yml)
DS = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")
CORRIDOR = 'corridor=~"$corridor"'
TAGS = ["corridor"]
STAGES = ("fulfilment", "origin", "linehaul", "customs", "last_mile")


# ---- building blocks ------------------------------------------------------------------------------
def query(expr: str, legend: str = "", *, ref: str = "A", instant: bool = False,
          fmt: "pm.PromQueryFormat | None" = None) -> prometheus.Dataquery:
    q = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    q = q.instant() if instant else q.range()
    if legend:
        q = q.legend_format(legend)
    if fmt is not None:
        q = q.format(fmt)
    return q


def ts(title: str, description: str, targets: list, *, unit: str = "short", span: int = 12,
       height: int = 8, stacked: bool = False, minimum: float | None = 0,
       maximum: float | None = None) -> timeseries.Panel:
    p = (timeseries.Panel().title(title).description(description).datasource(DS)
         .unit(unit).span(span).height(height).targets(targets)
         .legend(cb.VizLegendOptions().display_mode(cm.LegendDisplayMode.TABLE)
                 .placement(cm.LegendPlacement.BOTTOM).show_legend(True)
                 .calcs(["lastNotNull", "max"]))
         .tooltip(cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI)
                  .sort(cm.SortOrder.DESCENDING))
         .fill_opacity(10).line_width(1))
    if minimum is not None:
        p = p.min(minimum)
    if maximum is not None:
        p = p.max(maximum)
    if stacked:
        p = p.stacking(cb.StackingConfig().mode(cm.StackingMode.NORMAL)).fill_opacity(40)
    return p


def single(title: str, description: str, expr: str, *, unit: str = "short", span: int = 6,
           thresholds: list[tuple[float | None, str]] | None = None,
           decimals: float | None = None) -> stat.Panel:
    steps = thresholds or [(None, "green")]
    p = (stat.Panel().title(title).description(description).datasource(DS).unit(unit)
         .span(span).height(4)
         .with_target(query(expr, instant=True))
         .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
         .color_mode(cm.BigValueColorMode.BACKGROUND)
         .graph_mode(cm.BigValueGraphMode.NONE)
         .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
                     .steps([dm.Threshold(value=v, color=c) for v, c in steps])))
    if decimals is not None:
        p = p.decimals(decimals)
    return p


def matrix(title: str, description: str, expr: str, *, unit: str, span: int = 12,
           height: int = 8, thresholds: list[tuple[float | None, str]]) -> table.Panel:
    """An instant query turned into a corridor (rows) x stage (columns) table, cells coloured."""
    return (table.Panel().title(title).description(description).datasource(DS).unit(unit)
            .span(span).height(height)
            .with_target(query(expr, instant=True, fmt=pm.PromQueryFormat.TABLE))
            .with_transformation(dm.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"rowField": "corridor", "columnField": "stage", "valueField": "Value",
                         "emptyValue": "null"}))
            .with_transformation(dm.DataTransformerConfig(
                id_val="organize",
                options={"indexByName": {"corridor\\stage": 0,
                                         **{s: i + 1 for i, s in enumerate(STAGES)}},
                         "renameByName": {"corridor\\stage": "corridor"}}))
            .cell_options(cm.TableColoredBackgroundCellOptions(
                mode=cm.TableCellBackgroundDisplayMode.GRADIENT))
            .thresholds(db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
                        .steps([dm.Threshold(value=v, color=c) for v, c in thresholds]))
            .override_by_name("corridor", [dm.DynamicConfigValue(
                id_val="custom.cellOptions", value={"type": "auto"})]))


def datasource_var() -> db.DatasourceVariable:
    return (db.DatasourceVariable("datasource").label("Prometheus").type("prometheus")
            .current(dm.VariableOption(text=DATASOURCE_UID, value=DATASOURCE_UID, selected=True)))


def corridor_var() -> db.QueryVariable:
    # Corridors with open shipments or deliveries (both are exported per corridor).
    return (db.QueryVariable("corridor").label("Corridor").datasource(DS)
            .query({"qryType": 1, "query": "label_values({__name__=~\"corridor_shipments_in_stage|"
                    "corridor_shipments_delivered_total\"}, corridor)", "refId": "corridor"})
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(True).include_all(True).all_value(".*")
            .current(dm.VariableOption(text="All", value="$__all", selected=True)))


def window_var() -> db.CustomVariable:
    # Deliveries are sparse per corridor: SLA rates and percentiles over a window, not per scrape.
    return (db.CustomVariable("window").label("SLA window").values("1h,6h,1d,7d")
            .current(dm.VariableOption(text="6h", value="6h", selected=True)))


def base(uid: str, title: str, description: str) -> db.Dashboard:
    return (db.Dashboard(title).uid(uid).description(description).tags(TAGS)
            .refresh("30s").time("now-24h", "now").timezone("utc")
            .tooltip(dm.DashboardCursorSync.CROSSHAIR)
            .link(db.DashboardLink("Corridor dashboards").type(dm.DashboardLinkType.DASHBOARDS)
                  .tags(TAGS).as_dropdown(True).include_vars(True).keep_time(True))
            .with_variable(datasource_var()))


# ---- dashboards ---------------------------------------------------------------------------------
def overview() -> db.Dashboard:
    delivered = f"corridor_shipments_delivered_total{{{CORRIDOR}}}"
    on_time = f'corridor_shipments_delivered_total{{{CORRIDOR},on_time="true"}}'
    transit = f"corridor_shipment_transit_seconds_bucket{{{CORRIDOR}}}"
    d = (base("corridor-overview", "Corridor overview",
              "Per-corridor SLA: on-time rate, overdue shipments, transit percentiles, traffic. "
              "Fleet figures: every worker exports only its partitions, panels sum across them.")
         .with_variable(corridor_var()).with_variable(window_var()))
    d = (d.with_row(db.Row("SLA now"))
         .with_panel(single(
             "On-time rate ($window)", "Delivered at or before the promise, share of deliveries "
             "in the window, selected corridors.",
             f"sum(increase({on_time}[$window]) or 0 * increase({delivered}[$window])) / "
             f"sum(increase({delivered}[$window]))",
             unit="percentunit", decimals=1,
             thresholds=[(None, "red"), (0.9, "orange"), (0.95, "green")]))
         .with_panel(single(
             "Overdue open shipments", "Open shipments past their promised delivery time "
             "(stream event time), selected corridors.",
             f"sum(corridor_shipments_overdue{{{CORRIDOR}}}) or vector(0)",
             thresholds=[(None, "green"), (1, "orange"), (50, "red")]))
         .with_panel(single(
             "Predicted late (open)", "Open shipments with a promise whose predicted P(late) is at "
             "or above the SLA policy's at_risk (docs/risk.md), share of those scored; "
             "CorridorAtRiskRising fires above 25 %.",
             f"(sum(corridor_shipments_at_risk{{{CORRIDOR}}}) or vector(0)) / "
             f"sum(corridor_shipments_scored{{{CORRIDOR}}})",
             unit="percentunit", decimals=1,
             thresholds=[(None, "green"), (0.1, "orange"), (0.25, "red")]))
         .with_panel(single(
             "Open shipments", "Shipments not yet ended, selected corridors.",
             f"sum(corridor_shipments_in_stage{{{CORRIDOR}}}) or vector(0)"))
         .with_panel(single(
             "Delivered ($window)", "Shipments delivered in the window, selected corridors.",
             f"sum(increase({delivered}[$window])) or vector(0)", decimals=0)))
    d = (d.with_row(db.Row("On time and overdue"))
         .with_panel(ts(
             "On-time rate per corridor ($window rolling)",
             "sum by (corridor) of on-time deliveries / all deliveries over the window.",
             # `or 0 * ...`: a corridor whose deliveries are all late has no on_time="true"
             # series; without it the worst corridor would have no line at all.
             [query(f"sum by (corridor) (increase({on_time}[$window]) "
                    f"or 0 * increase({delivered}[$window])) / "
                    f"sum by (corridor) (increase({delivered}[$window]))", "{{corridor}}")],
             unit="percentunit", span=12, maximum=1))
         .with_panel(ts(
             "Overdue open shipments per corridor and service level",
             "Open shipments past their promise, by corridor and service level.",
             [query(f"sum by (corridor, service_level) (corridor_shipments_overdue{{{CORRIDOR}}})",
                    "{{corridor}} {{service_level}}")], span=12))
         .with_panel(ts(
             "Open shipments at risk per corridor and stage",
             "Open shipments predicted late (P(late) >= at_risk), by the stage they are in now: "
             "where parcels that will be late are held, before they are delivered late.",
             [query(f"sum by (corridor, stage) (corridor_shipments_at_risk{{{CORRIDOR}}})",
                    "{{corridor}} {{stage}}")], span=12))
         .with_panel(ts(
             "Predicted late share per corridor",
             "Sum of P(late) over the open shipments with a promise / their number: the share "
             "expected to miss the promise.",
             [query(f"sum by (corridor) (corridor_shipments_predicted_late{{{CORRIDOR}}}) / "
                    f"sum by (corridor) (corridor_shipments_scored{{{CORRIDOR}}})", "{{corridor}}")],
             unit="percentunit", span=12, maximum=1)))
    d = (d.with_row(db.Row("Transit time (order placed -> delivered)"))
         .with_panel(ts(
             "Transit p50 / p90 / p95 per corridor ($window)",
             "histogram_quantile over sum by (le, corridor) of the transit histogram's rate.",
             [query(f"histogram_quantile({q}, sum by (le, corridor) (rate({transit}[$window])))",
                    f"{{{{corridor}}}} p{int(q * 100)}", ref=ref)
              for q, ref in ((0.5, "A"), (0.9, "B"), (0.95, "C"))],
             unit="s", span=24, height=9))
         .with_panel(matrix(
             "Transit p90 by corridor x service level ($window)",
             "p90 transit time per corridor and service level over the window.",
             f"histogram_quantile(0.9, sum by (le, corridor, service_level) "
             f"(rate({transit}[$window])))",
             unit="s", span=24, thresholds=[(None, "green")])
             .transformations([dm.DataTransformerConfig(
                 id_val="groupingToMatrix",
                 options={"rowField": "corridor", "columnField": "service_level",
                          "valueField": "Value", "emptyValue": "null"})])))
    d = (d.with_row(db.Row("Traffic"))
         .with_panel(ts(
             "Deliveries per hour by corridor", "Delivered shipments per hour.",
             [query(f"sum by (corridor) (rate({delivered}[$__rate_interval])) * 3600",
                    "{{corridor}}")], unit="short", span=12, stacked=True))
         .with_panel(ts(
             "Open shipments by corridor", "Open shipments (any stage) per corridor.",
             [query(f"sum by (corridor) (corridor_shipments_in_stage{{{CORRIDOR}}})",
                    "{{corridor}}")], span=12, stacked=True))
         .with_panel(ts(
             "Exceptions per hour by corridor and type",
             "returned, lost, cancelled, delivery_failed, customs_hold, customs_rejected, "
             "customs_seized.",
             [query(f"sum by (corridor, type) (rate(corridor_shipment_exceptions_total"
                    f"{{{CORRIDOR}}}[$__rate_interval])) * 3600", "{{corridor}} {{type}}")],
             span=24)))
    return d


def bottlenecks() -> db.Dashboard:
    excess = f"corridor_stage_excess_seconds{{{CORRIDOR}}}"
    dwell = f'corridor_stage_dwell_seconds_bucket{{{CORRIDOR},stage=~"$stage"}}'
    stage_var = (db.CustomVariable("stage").label("Stage").values(",".join(STAGES))
                 .multi(True).include_all(True).all_value(".*")
                 .current(dm.VariableOption(text="All", value="$__all", selected=True)))
    d = (base("corridor-bottlenecks", "Corridor bottlenecks",
              "Where shipments wait: stage dwell of ended shipments, time beyond stage target of "
              "open ones, and the fleet bottleneck stage per corridor.")
         .with_variable(corridor_var()).with_variable(stage_var).with_variable(window_var()))
    d = (d.with_row(db.Row("Bottleneck now (open shipments)"))
         .with_panel(
             table.Panel().title("Fleet bottleneck stage per corridor")
             .description("The stage whose open shipments have the largest total time beyond "
                          "target, summed over all workers (topk by corridor). Only stages with "
                          "excess > 0.")
             .datasource(DS).unit("s").span(8).height(9)
             .with_target(query(f"topk by (corridor) (1, sum by (corridor, stage) ({excess}) > 0)",
                                instant=True, fmt=pm.PromQueryFormat.TABLE))
             .with_transformation(dm.DataTransformerConfig(
                 id_val="organize",
                 options={"excludeByName": {"Time": True},
                          "indexByName": {"corridor": 0, "stage": 1, "Value": 2},
                          "renameByName": {"Value": "time beyond target"}}))
             .sort_by([cb.TableSortByFieldState().display_name("time beyond target").desc(True)]))
         .with_panel(matrix(
             "Time beyond target per open shipment: corridor x stage",
             "Average over the stage's open shipments of max(0, now - stage start - stage "
             "target), fleet-wide: what CorridorStageBottleneck reads (12 h), independent of "
             "the corridor's volume.",
             f"sum by (corridor, stage) ({excess}) / "
             f"(sum by (corridor, stage) (corridor_shipments_in_stage{{{CORRIDOR}}}) > 0)",
             unit="s", span=16, height=9,
             thresholds=[(None, "green"), (3600, "yellow"), (43200, "orange"), (86400, "red")]))
         .with_panel(ts(
             "Time beyond target per open shipment, per corridor and stage",
             "corridor_stage_excess_seconds over corridor_shipments_in_stage, summed over "
             "workers.",
             [query(f'sum by (corridor, stage) (corridor_stage_excess_seconds{{{CORRIDOR},'
                    f'stage=~"$stage"}}) / (sum by (corridor, stage) (corridor_shipments_in_stage'
                    f'{{{CORRIDOR},stage=~"$stage"}}) > 0)', "{{corridor}} {{stage}}")],
             unit="s", span=12))
         .with_panel(ts(
             "Open shipments per corridor and stage", "corridor_shipments_in_stage summed over "
             "workers.",
             [query(f'sum by (corridor, stage) (corridor_shipments_in_stage{{{CORRIDOR},'
                    f'stage=~"$stage"}})', "{{corridor}} {{stage}}")], span=12)))
    d = (d.with_row(db.Row("Where late days were lost (late deliveries)"))
         .with_panel(matrix(
             "Lateness attributed per stage, days ($window): corridor x stage",
             "The lateness (delivered - promise) of the late deliveries of the window, split over "
             "the stages that ran over their targets (docs/risk.md); a corridor's stages add up "
             "to its total lateness.",
             f"sum by (corridor, stage) (increase(corridor_late_attributed_seconds_total"
             f"{{{CORRIDOR}}}[$window])) / 86400",
             unit="d", span=24, thresholds=[(None, "green"), (1, "yellow"), (10, "orange"),
                                            (100, "red")])))
    d = (d.with_row(db.Row("Stage dwell (ended shipments)"))
         .with_panel(matrix(
             "Stage dwell p90: corridor x stage ($window)",
             "p90 of the time spent in each stage by shipments that ended in the window.",
             f"histogram_quantile(0.9, sum by (le, corridor, stage) "
             f"(rate(corridor_stage_dwell_seconds_bucket{{{CORRIDOR}}}[$window])))",
             unit="s", span=24, thresholds=[(None, "green")]))
         .with_panel(ts(
             "Stage dwell p50 / p90 per stage ($window)",
             "Selected corridors together, per stage.",
             [query(f"histogram_quantile({q}, sum by (le, stage) (rate({dwell}[$window])))",
                    f"{{{{stage}}}} p{int(q * 100)}", ref=ref)
              for q, ref in ((0.5, "A"), (0.9, "B"))], unit="s", span=12))
         .with_panel(
             heatmap.Panel().title("Stage dwell distribution")
             .description("Ended shipments per dwell-time bucket over time (selected corridors "
                          "and stages).")
             .datasource(DS).span(12).height(8)
             .with_target(query(f"sum by (le) (increase({dwell}[$__rate_interval]))", "{{le}}",
                                fmt=pm.PromQueryFormat.HEATMAP))
             .calculate(False)
             .y_axis(heatmap.YAxisConfig().unit("s"))
             .cell_values(heatmap.CellValues().unit("short"))
             .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME)
                    .scheme("Oranges").scale(hm.HeatmapColorScale.EXPONENTIAL).exponent(0.5)
                    .fill("dark-orange").steps(64).reverse(False))
             .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.LE))))
    return d


#: The floor of CorridorCustomsClearanceSlow (deploy/prometheus/rules.yml): the target line.
CUSTOMS_FLOOR = 0.8
#: The annotation query: each import regime in the hour after its start (the worker exports the
#: start of every regime of its table as corridor_import_regime_start_seconds).
REGIME_CHANGES = "max by (regime) (corridor_import_regime_start_seconds) > time() - 3600 <= time()"


def customs() -> db.Dashboard:
    sel = f'{CORRIDOR},regime=~"$regime"'
    count = f"corridor_customs_clearance_seconds_count{{{sel}}}"
    within = f'corridor_customs_cleared_within_target_total{{{sel},days="calendar"}}'
    bucket = f"corridor_customs_clearance_seconds_bucket{{{sel}}}"
    arrivals = f"corridor_customs_arrivals_total{{{sel}}}"
    events = f"corridor_customs_events_total{{{sel}}}"
    waiting = f"corridor_customs_waiting{{{sel}}}"
    delivered = f"corridor_shipments_delivered_total{{{CORRIDOR}}}"
    dex = f"corridor_shipments_delivered_excluding_customs_total{{{CORRIDOR}}}"
    regime_var = (db.QueryVariable("regime").label("Import regime").datasource(DS)
                  .query({"qryType": 1, "query": "label_values(corridor_customs_arrivals_total, regime)",
                          "refId": "regime"})
                  .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
                  .sort(dm.VariableSort.ALPHABETICAL_ASC)
                  .multi(True).include_all(True).all_value(".*")
                  .current(dm.VariableOption(text="All", value="$__all", selected=True)))
    floor = db.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE).steps(
        [dm.Threshold(value=None, color="red"), dm.Threshold(value=CUSTOMS_FLOOR, color="green")])
    d = (base("corridor-customs", "Corridor customs",
              "Import customs as its own view: clearance time (arrived at destination -> import "
              "release) per destination, the share cleared within the destination's target (SLA "
              "policy [customs]) against the 80 % floor of CorridorCustomsClearanceSlow, holds per "
              "1,000 arrivals, parcels waiting by age, every figure by import regime at arrival "
              "(streams/regimes.toml); regime starts are annotations.")
         .with_variable(corridor_var()).with_variable(regime_var).with_variable(window_var())
         .annotation(db.AnnotationQuery().name("Import regime changes").datasource(DS).enable(True)
                     .icon_color("purple")
                     # a regime's start, drawn in the hour after it (the series' value is its start)
                     .expr(REGIME_CHANGES)))
    share = (f"sum by (corridor, regime) (increase({within}[$window]) or 0 * increase({count}[$window]))"
             f" / sum by (corridor, regime) (increase({count}[$window]))")
    d = (d.with_row(db.Row("Clearance now"))
         .with_panel(single(
             "Cleared within target ($window)", "Parcels released by import customs within the "
             "destination's target, share of those released in the window (selected corridors and "
             "regimes). Red below the 80 % floor.",
             f"sum(increase({within}[$window]) or 0 * increase({count}[$window])) / "
             f"sum(increase({count}[$window]))", unit="percentunit", decimals=1,
             thresholds=[(None, "red"), (CUSTOMS_FLOOR, "green")]))
         .with_panel(single(
             "Holds per 1,000 arrivals ($window)", "Import holds (held_for_inspection) per 1,000 "
             "parcels that arrived at their destination.",
             f'1000 * sum(increase(corridor_customs_events_total{{{sel},type="hold"}}[$window])) / '
             f"sum(increase({arrivals}[$window]))", decimals=0))
         .with_panel(single(
             "Waiting in customs", "Open parcels arrived and not released yet (stream event time).",
             f"sum({waiting}) or vector(0)"))
         .with_panel(single(
             "On time excluding customs ($window)", "Deliveries on time once the customs time is "
             "taken off the clock (carriers' \"excluding customs delays\").",
             f'sum(increase(corridor_shipments_delivered_excluding_customs_total{{{CORRIDOR},'
             f'on_time="true"}}[$window]) or 0 * increase({dex}[$window])) / '
             f"sum(increase({dex}[$window]))", unit="percentunit", decimals=1,
             thresholds=[(None, "red"), (0.9, "orange"), (0.95, "green")])))
    d = (d.with_row(db.Row("Clearance time and target"))
         .with_panel(ts(
             "Clearance p50 / p90 per destination ($window)",
             "histogram_quantile over the clearance histogram (arrived_destination -> import "
             "release), summed by destination.",
             [query(f"histogram_quantile({q}, sum by (le, destination) (rate({bucket}[$window])))",
                    f"{{{{destination}}}} p{int(q * 100)}", ref=ref)
              for q, ref in ((0.5, "A"), (0.9, "B"))], unit="s", span=12))
         .with_panel(ts(
             "Share cleared within target per corridor and regime ($window)",
             "What CorridorCustomsClearanceSlow reads (over 6 h); the line is its 80 % floor.",
             [query(share, "{{corridor}} {{regime}}")], unit="percentunit", span=12, maximum=1)
             .thresholds(floor)
             .thresholds_style(cb.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.LINE))))
    d = (d.with_row(db.Row("Holds and waiting"))
         .with_panel(ts(
             "Holds, inspections, rejections, seizures per 1,000 arrivals ($window)",
             "Import customs events of the parcels that arrived, per 1,000 arrivals, per corridor.",
             [query(f"1000 * sum by (corridor, type) (increase({events}[$window])) / ignoring (type) "
                    f"group_left sum by (corridor) (increase({arrivals}[$window]))",
                    "{{corridor}} {{type}}")], span=12))
         .with_panel(ts(
             "Parcels waiting in customs by age", "Open parcels in customs by time since arrival.",
             [query(f"sum by (age) ({waiting})", "{{age}}")], span=12, stacked=True)))
    d = (d.with_row(db.Row("By import regime"))
         .with_panel(matrix(
             "Cleared within target: corridor x regime ($window)",
             "Share of the parcels released in the window within target, per corridor and the "
             "import regime in force at their arrival.",
             share, unit="percentunit", span=12,
             thresholds=[(None, "red"), (CUSTOMS_FLOOR, "green")])
             .transformations([dm.DataTransformerConfig(
                 id_val="groupingToMatrix",
                 options={"rowField": "corridor", "columnField": "regime",
                          "valueField": "Value", "emptyValue": "null"})]))
         .with_panel(ts(
             "Clearance p90 by regime and value class ($window)",
             "low_value, formal (by the declared value against the regime's threshold) or unknown "
             "(no declared value).",
             [query(f"histogram_quantile(0.9, sum by (le, regime, value_class) "
                    f"(rate({bucket}[$window])))", "{{regime}} {{value_class}}")],
             unit="s", span=12))
         .with_panel(ts(
             "Parcels waiting in customs by regime", "Open parcels in customs per import regime "
             "and value class.",
             [query(f"sum by (regime, value_class) ({waiting})", "{{regime}} {{value_class}}")],
             span=12, stacked=True))
         .with_panel(ts(
             "On time with and without customs, per corridor ($window)",
             "Every delivery counted twice: on the full clock (corridor_shipments_delivered_total) "
             "and with the customs time removed.",
             [query(f'sum by (corridor) (increase({delivered[:-1]},on_time="true"}}[$window]) '
                    f"or 0 * increase({delivered}[$window])) / "
                    f"sum by (corridor) (increase({delivered}[$window]))", "{{corridor}} full clock"),
              query(f'sum by (corridor) (increase({dex[:-1]},on_time="true"}}[$window]) '
                    f"or 0 * increase({dex}[$window])) / "
                    f"sum by (corridor) (increase({dex}[$window]))", "{{corridor}} excl. customs",
                    ref="B")], unit="percentunit", span=12, maximum=1)))
    return d


def workers() -> db.Dashboard:
    job_var = (db.QueryVariable("job").label("Job").datasource(DS)
               .query({"qryType": 1, "query": "label_values(corridor_partitions_assigned, job)",
                       "refId": "job"})
               .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).include_all(False)
               .current(dm.VariableOption(text=JOB, value=JOB, selected=True)))
    j = 'job=~"$job"'
    d = (base("corridor-workers", "Corridor workers",
              "Worker health: up, partitions, events per second, consumer lag, rejected events, "
              "rebalances, stream clock.")
         .with_variable(job_var))
    d = (d.with_row(db.Row("Fleet"))
         .with_panel(single("Workers up", "Scrape targets of the job that answered the last "
                            "scrape.", f"sum(up{{{j}}})",
                            thresholds=[(None, "red"), (1, "green")]))
         .with_panel(single("Workers down", "Scrape targets that did not answer.",
                            f"count(up{{{j}}} == 0) or vector(0)",
                            thresholds=[(None, "green"), (1, "red")]))
         .with_panel(single("Partitions assigned", "Input partitions owned, summed over workers "
                            "(= CORRIDOR_PARTITIONS when every partition has an owner).",
                            f"sum(corridor_partitions_assigned{{{j}}})"))
         .with_panel(single("Consumer lag", "Messages not yet committed, all topics.",
                            f"sum(corridor_consumer_lag{{{j}}}) or vector(0)",
                            thresholds=[(None, "green"), (1000, "orange"), (100000, "red")]))
         .with_panel(single("Workers ready", "Workers whose /health answers 200 (assigned, "
                            "tables recovered, not rebalancing): CorridorWorkerNotReady.",
                            f"sum(corridor_worker_ready{{{j}}})",
                            thresholds=[(None, "red"), (1, "green")]))
         .with_panel(ts("Memory against the limit by worker",
                        "Resident memory over the container's memory limit "
                        "(corridor_memory_limit_bytes; no line without a limit): "
                        "CorridorMemoryNearLimit at 90 %.",
                        [query(f"max by (instance) (process_resident_memory_bytes{{{j}}}) / "
                               f"max by (instance) (corridor_memory_limit_bytes{{{j}}})",
                               "{{instance}}")], unit="percentunit", span=18)))
    d = (d.with_row(db.Row("Throughput and lag"))
         .with_panel(ts("Events consumed per second by topic", "Input messages consumed.",
                        [query(f"sum by (topic) (rate(corridor_events_consumed_total{{{j}}}"
                               f"[$__rate_interval]))", "{{topic}}")], unit="ops", span=12))
         .with_panel(ts("Events consumed per second by worker", "Input messages consumed.",
                        [query(f"sum by (instance) (rate(corridor_events_consumed_total{{{j}}}"
                               f"[$__rate_interval]))", "{{instance}}")], unit="ops", span=12))
         .with_panel(ts("Consumer lag by topic", "End offset - committed offset, summed over "
                        "partitions and workers.",
                        [query(f"sum by (topic) (corridor_consumer_lag{{{j}}})", "{{topic}}")],
                        span=12))
         .with_panel(ts("Consumer lag by worker", "Lag of the partitions each worker owns.",
                        [query(f"sum by (instance) (corridor_consumer_lag{{{j}}})",
                               "{{instance}}")], span=12)))
    d = (d.with_row(db.Row("Errors and rebalances"))
         .with_panel(ts("Rejected events per second by topic and reason",
                        "Messages sent to <topic>.dlq.",
                        [query(f"sum by (topic, reason) (rate(corridor_events_rejected_total"
                               f"{{{j}}}[$__rate_interval]))", "{{topic}} {{reason}}")],
                        unit="ops", span=12))
         .with_panel(ts("Duplicate and late events per second",
                        "Duplicates change nothing; late events arrive after their shipment ended.",
                        [query(f"sum by (topic) (rate(corridor_events_duplicate_total{{{j}}}"
                               f"[$__rate_interval]))", "duplicate {{topic}}", ref="A"),
                         query(f"sum by (topic) (rate(corridor_events_late_total{{{j}}}"
                               f"[$__rate_interval]))", "late {{topic}}", ref="B")],
                        unit="ops", span=12))
         .with_panel(ts("Rebalances by worker", "Consumer group rebalances (increase per 5m).",
                        [query(f"sum by (instance) (increase(corridor_rebalances_total{{{j}}}[5m]))",
                               "{{instance}}")], span=12))
         .with_panel(ts("Up and partitions by worker", "up (0/1) and input partitions owned.",
                        [query(f"up{{{j}}}", "up {{instance}}", ref="A"),
                         query(f"sum by (instance) (corridor_partitions_assigned{{{j}}})",
                               "partitions {{instance}}", ref="B")], span=12))
         .with_panel(ts("Stream clock behind wall clock by worker",
                        "time() - corridor_stream_time_seconds: how far event time trails now "
                        "(large during a replay, small when live).",
                        [query(f"time() - max by (instance) (corridor_stream_time_seconds{{{j}}})",
                               "{{instance}}")], unit="s", span=24)))
    return d


DASHBOARDS = {"corridor-overview.json": overview, "corridor-bottlenecks.json": bottlenecks,
              "corridor-customs.json": customs, "corridor-workers.json": workers}


def render() -> dict[str, str]:
    """file name -> JSON text, exactly as committed."""
    out = {}
    for name, make in DASHBOARDS.items():
        model = make().build()
        # Panel ids: fixed by position, so regeneration is stable.
        text = json.dumps(model, cls=JSONEncoder, sort_keys=True, indent=2)
        data = json.loads(text)
        for i, panel in enumerate(data.get("panels", []), start=1):
            panel["id"] = i
        out[name] = json.dumps(data, sort_keys=True, indent=2) + "\n"
    return out


def main(argv: list[str]) -> int:
    rendered = render()
    if "--check" in argv:
        stale = [n for n, text in rendered.items()
                 if not (OUT_DIR / n).is_file() or (OUT_DIR / n).read_text() != text]
        for n in stale:
            print(f"out of date: {OUT_DIR / n} (run `make dashboards`)", file=sys.stderr)
        return 1 if stale else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (OUT_DIR / name).write_text(text)
        print(f"wrote {OUT_DIR / name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
