"""The report's HTML template (Jinja2, autoescaped: every value from the archive, LLM text above all, is
escaped unless it is one of the fragments ``report`` builds itself and marks safe: Pygments' highlighted code,
which escapes the code it colours, and the base64 figures).

The page loads nothing: a Content-Security-Policy allows only inline styles, ``data:`` images and the one
sorting script below, identified by its SHA-256, so even an unescaped ``<script>`` could not run.
"""

from __future__ import annotations

import base64
import hashlib

# Click a column header to sort by it (numbers numerically, via the cell's data-sort when it has one).
SORT_SCRIPT = """
document.querySelectorAll("table.sortable th").forEach(function (th) {
  th.addEventListener("click", function () {
    var column = th.cellIndex;
    var body = th.closest("table").tBodies[0], rows = Array.from(body.rows);
    var ascending = th.dataset.order !== "asc";
    th.closest("tr").querySelectorAll("th").forEach(function (h) { delete h.dataset.order; });
    th.dataset.order = ascending ? "asc" : "desc";
    function key(row) { var c = row.cells[column]; return c.dataset.sort !== undefined ? c.dataset.sort : c.textContent; }
    rows.sort(function (a, b) {
      var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      var r = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return ascending ? r : -r;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""

SCRIPT_HASH = base64.b64encode(hashlib.sha256(SORT_SCRIPT.encode()).digest()).decode()
CONTENT_POLICY = f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{SCRIPT_HASH}'"

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-bottom: .3em; }
table { border-collapse: collapse; margin: .5em 0; } td, th { padding: 2px 8px; border-bottom: 1px solid #eee;
  text-align: left; vertical-align: top; } th { background: #f4f4f4; }
table.sortable th { cursor: pointer; } table.sortable th[data-order=asc]::after { content: " \\25B2"; }
table.sortable th[data-order=desc]::after { content: " \\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #17803d; } .rejected, .duplicate { color: #a15c00; } .failed, .diverged, .timeout { color: #b3261e; }
.pending { color: #666; } .tag { background: #eef; border-radius: 3px; padding: 0 4px; margin-right: 3px;
  font-size: .85em; white-space: nowrap; }
pre { background: #f8f8f8; padding: .6em; overflow-x: auto; white-space: pre-wrap; font-size: 12.5px; }
section.candidate { border-top: 1px solid #ddd; padding-top: .3em; } img { max-width: 100%; }
.summary td:first-child { color: #555; } .sentence { font-size: 1.1em; font-weight: 600; }
"""

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ policy }}">
<title>lossforge report: {{ run.name }}</title><style>{{ style }}</style></head>
<body>
<h1>lossforge report: {{ run.name }}</h1>
<p>Written {{ written }} UTC; the run is <b>{{ overview.state }}</b>{% if overview.state == "running" %}
(this file is rewritten after every generation: reload to see more){% endif %}.</p>

<h2 id="summary">Summary</h2>
<table class="summary">
<tr><td>task</td><td>{{ overview.task or "-" }}</td></tr>
<tr><td>proposer</td><td>{{ overview.proposer or "-" }}{% if overview.model %} ({{ overview.model }}){% endif %}</td></tr>
<tr><td>generations</td><td>{{ overview.generations_done }} of {{ overview.generations_asked }} done,
 {{ overview.population }} proposals each</td></tr>
<tr><td>budget</td><td>{{ budget }}</td></tr>
<tr><td>candidates</td><td>{% for status, n in overview.counts.items() if n %}<span class="{{ status }}">{{ n }} {{ status }}</span>{% if not loop.last %}, {% endif %}{% endfor %}</td></tr>
<tr><td>LLM</td><td>{{ overview.llm.calls }} calls, {{ overview.llm.tokens }} tokens, ${{ "%.4f"|format(overview.llm.cost_usd) }}</td></tr>
<tr><td>best</td><td>{% if best %}<a href="#c{{ best.id }}">#{{ best.id }} {{ best.name }}</a>: {{ best.score }}{% if best.verdict %} ({{ best.verdict }} than {{ best.baseline }}){% endif %}{% else %}none trained yet{% endif %}</td></tr>
<tr><td>confirmed</td><td>{% if confirmation %}<span class="sentence">{{ confirmation.sentence }}</span>{% if confirmation.winner %}: winner {{ confirmation.winner }}{% endif %}{% else %}not confirmed (<code>lossforge confirm</code>){% endif %}</td></tr>
<tr><td>started</td><td>{{ overview.started or "-" }}</td></tr>
</table>
{% if confirmation and confirmation.results %}
<h3>Confirmation results</h3>
<p>{{ confirmation.trainings }} confirmation trainings archived{% if confirmation.failed %}, {{ confirmation.failed }} of them not ok{% endif %}.</p>
<table class="sortable"><thead><tr><th>name</th><th>role</th><th>task</th><th>beta</th><th>seeds</th><th>mean</th><th>95% CI</th><th>paired difference</th><th>verdict</th></tr></thead><tbody>
{% for r in confirmation.results %}<tr><td>{{ r.name }}</td><td>{{ r.role }}</td><td>{{ r.task }}</td><td>{{ r.beta }}</td><td>{{ r.seeds }}</td>
<td class="num">{{ r.mean_text }}</td><td>{{ r.ci_text }}</td><td>{{ r.paired_text }}</td><td>{{ r.verdict or "" }}</td></tr>
{% endfor %}</tbody></table>{% endif %}

<h2 id="leaderboard">Leaderboard ({{ entries|length }} candidates)</h2>
<p>Click a column to sort. Ranked: trained candidates by score; the others follow with their reason.</p>
<table class="sortable" id="leaderboard-table"><thead><tr><th>#</th><th>id</th><th>name</th><th>gen</th><th>status</th>
<th>{{ "mean ±CI" if has_stats else "score" }}</th>{% if has_stats %}<th>verdict</th>{% endif %}
{% for m in metric_columns %}<th>{{ m }}</th>{% endfor %}<th>tags</th><th>reason</th></tr></thead><tbody>
{% for e in entries %}<tr class="candidate-row" data-id="{{ e.id }}"><td class="num" data-sort="{{ e.rank or 1e9 }}">{{ e.rank or "" }}</td>
<td class="num" data-sort="{{ e.id }}"><a href="#c{{ e.id }}">{{ e.id }}</a></td><td>{{ e.name or "" }}</td><td class="num">{{ e.generation }}</td>
<td class="{{ e.status }}">{{ e.status }}</td><td class="num" data-sort="{{ e.sort_score }}">{{ e.score_text }}</td>
{% if has_stats %}<td>{{ e.verdict or "" }}</td>{% endif %}
{% for m in metric_columns %}<td class="num" data-sort="{{ e.metric_sort[m] }}">{{ e.metric_text[m] }}</td>{% endfor %}
<td>{% for t in e.tags %}<span class="tag">{{ t }}</span>{% endfor %}</td><td>{{ e.reason_line }}</td></tr>
{% endfor %}</tbody></table>

<h2 id="figures">Figures</h2>
{% for f in figures %}<figure><img alt="{{ f.name }}" src="data:image/png;base64,{{ f.data }}"></figure>
{% else %}<p>No figures yet.</p>{% endfor %}

<h2 id="failures">Failures by reason</h2>
{% if failures %}<table class="sortable"><thead><tr><th>count</th><th>status</th><th>stage</th><th>reason</th><th>candidates</th></tr></thead><tbody>
{% for g in failures %}<tr><td class="num">{{ g.count }}</td><td class="{{ g.status }}">{{ g.status }}</td><td>{{ g.stage or "" }}</td><td>{{ g.reason }}</td>
<td>{% for i in g.ids %}<a href="#c{{ i }}">#{{ i }}</a> {% endfor %}</td></tr>{% endfor %}</tbody></table>
{% else %}<p>None.</p>{% endif %}

{% if models %}<h2 id="models">LLM models</h2>
<table class="sortable" id="models-table"><thead><tr><th>model</th><th>proposals</th><th>trained</th><th>success rate</th><th>best</th><th>cost (USD)</th></tr></thead><tbody>
{% for m in models %}<tr><td>{{ m.model }}</td><td class="num">{{ m.proposals }}</td><td class="num">{{ m.ok }}</td><td class="num">{{ m.success_rate }}</td>
<td>{% if m.best_id is not none %}<a href="#c{{ m.best_id }}">#{{ m.best_id }}</a> {{ m.best_score }}{% endif %}</td><td class="num">{{ m.cost_usd }}</td></tr>{% endfor %}</tbody></table>{% endif %}
<h2 id="candidates">Candidates</h2>
{% for c in candidates %}<section class="candidate" id="c{{ c.id }}">
<h3>#{{ c.id }} {{ c.name or "" }} <span class="{{ c.status }}">{{ c.status }}</span> {{ c.score_text }}</h3>
<p>generation {{ c.generation }}{% if c.repair_round %}, repair round {{ c.repair_round }}{% endif %}, proposer {{ c.proposer or "-" }}
{% if c.parents %}; parents: {% for p in c.parents %}<a href="#c{{ p.id }}">#{{ p.id }} {{ p.name or "" }}</a> ({{ p.score_text }}) {% endfor %}{% endif %}
{% if c.children %}; children: {% for k in c.children %}<a href="#c{{ k.id }}">#{{ k.id }} {{ k.name or "" }}</a> {% endfor %}{% endif %}</p>
{% if c.reason %}<p><b>reason ({{ c.stage or "no stage" }}):</b></p><pre>{{ c.reason }}</pre>{% endif %}
{% if c.thought %}<p><b>thought:</b> {{ c.thought }}</p>{% endif %}
{% if c.metrics %}<p><b>metrics:</b> {% for k, v in c.metrics %}{{ k }} = {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</p>{% endif %}
{% if c.notes %}<ul>{% for n in c.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
{% if c.code_html %}{{ c.code_html }}{% endif %}
{% if c.exchange %}<details><summary>LLM exchange (model {{ c.exchange.model }}, {{ c.exchange.prompt_tokens }}+{{ c.exchange.completion_tokens }} tokens)</summary>
{% for m in c.exchange.messages %}<p><b>{{ m.role }}</b>{% if m.same_as %}: as sent for <a href="#c{{ m.same_as }}">#{{ m.same_as }}</a>{% endif %}</p>
{% if not m.same_as %}<pre>{{ m.content }}</pre>{% endif %}{% endfor %}
<p><b>reply</b></p><pre class="reply">{{ c.exchange.reply }}</pre></details>{% endif %}
</section>
{% endfor %}

<h2 id="config">Configuration and provenance</h2>
<pre>{{ config_yaml }}</pre>
<table class="summary">{% for k, v in versions %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}
<tr><td>git</td><td>{{ git_sha or "-" }}</td></tr></table>
<script>{{ script }}</script>
</body></html>
"""

__all__ = ["CONTENT_POLICY", "SCRIPT_HASH", "SORT_SCRIPT", "STYLE", "TEMPLATE"]
