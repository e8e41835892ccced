"""The web app's upload page: drop paintings, see each one's panel (`serving.panel`).

The page sends each file to `POST panel` (its bytes as the body) and puts the
HTML of the answer in its place; the server draws the panel, so the page and
`predict.py --html` show the same thing. Needs no TensorFlow.
"""

from serving import panel

FORM = """
<form id="upload"><label id="drop">Drop paintings here, or
<input id="files" type="file" accept="image/*" multiple></label></form>
<div id="results"></div>
"""
STYLE = """
#drop { display: block; border: 2px dashed #8aa3c8; border-radius: 8px; padding: 2em;
        text-align: center; background: #fff; margin-bottom: 1.2em; }
#drop.over { background: #eef3fb; }
.pending { color: #777; margin: 0.5em 0; }
"""
# Each file is its own request, all at once: the server batches those that arrive together.
SCRIPT = """
const results = document.getElementById('results');
const drop = document.getElementById('drop');
function escapeHtml(text) {
  const div = document.createElement('div'); div.textContent = text; return div.innerHTML;
}
async function send(file) {
  const slot = document.createElement('div');
  slot.className = 'pending';
  slot.textContent = 'Looking at ' + file.name + '...';
  results.appendChild(slot);
  let html;
  try {
    const response = await fetch('panel', {method: 'POST', body: file,
                                           headers: {'X-File-Name': encodeURIComponent(file.name)}});
    html = (await response.json()).html;
  } catch (error) {
    html = '<section class="panel error"><h2>' + escapeHtml(file.name) +
           '</h2><p class="message">' + escapeHtml(String(error)) + '</p></section>';
  }
  slot.outerHTML = html;
}
function handle(files) { for (const file of files) send(file); }
document.getElementById('files').addEventListener('change', (e) => handle(e.target.files));
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault(); drop.classList.remove('over'); handle(e.dataTransfer.files);
});
"""


def page_html(document: dict) -> str:
    """The page for the model whose metadata document is `document` (its title names the
    artists' count and the dataset)."""
    dataset = (document.get("dataset") or {}).get("full_name", "")
    title = f"Who painted it? ({len(document.get('artists', []))} artists"
    title += f", {dataset})" if dataset else ")"
    page = panel.page_html(title, FORM, script=SCRIPT)
    return page.replace("</style>", STYLE + "</style>", 1)
