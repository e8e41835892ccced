"""The web app's upload page: drop paintings, see each one's panel (`serving.panel`).

The page sends each file to `POST panel` (its bytes as the body) and puts the
HTML of the answer in its place; the server draws the panel, so the page and
`predict.py --html` show the same thing. A server started with writes allowed
(`serve.py --allow_enroll`) also offers, under an "unknown artist" answer, a
form that adds the painter from that painting and a few more (`POST enroll`).
Needs no TensorFlow.
"""

from serving import panel

FORM = """
<form id="upload"><label id="drop">Drop paintings here, or
<input id="files" type="file" accept="image/*" multiple></label>
<p><label>Said to be by (optional, checks the attribution):
<input id="claim" placeholder="an artist the model knows"></label></p></form>
<div id="results"></div>
"""
STYLE = """
#drop { display: block; border: 2px dashed #8aa3c8; border-radius: 8px; padding: 2em;
        text-align: center; background: #fff; margin-bottom: 1.2em; }
#drop.over { background: #eef3fb; }
.pending { color: #777; margin: 0.5em 0; }
form.enroll { background: #fff8e6; border: 1px solid #e8cf8a; border-radius: 8px;
              padding: 0.6em 1em; margin: -0.6em 0 1.2em; }
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
  let answer;
  try {
    const headers = {'X-File-Name': encodeURIComponent(file.name)};
    const claim = document.getElementById('claim').value.trim();
    if (claim) headers['X-Claimed-Artist'] = encodeURIComponent(claim);
    const response = await fetch('panel', {method: 'POST', body: file, headers: headers});
    answer = await response.json();
  } catch (error) {
    answer = {html: '<section class="panel error"><h2>' + escapeHtml(file.name) +
                    '</h2><p class="message">' + escapeHtml(String(error)) + '</p></section>'};
  }
  const box = document.createElement('div');
  box.innerHTML = answer.html;
  slot.replaceWith(box);
  if (answer.unknown && ALLOW_ENROLL) box.appendChild(enrollForm(file));
}
function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result.split(',')[1]);
    reader.onerror = reject;
    reader.readAsDataURL(file);
  });
}
// Adds the painter of an "unknown artist" answer from this painting and a few more.
function enrollForm(file) {
  const form = document.createElement('form');
  form.className = 'enroll';
  form.innerHTML = '<p>Not one of the model’s artists? Add the painter: ' +
    '<input name="artist" placeholder="Artist’s name" required> ' +
    '<input name="more" type="file" accept="image/*" multiple> ' +
    '(this painting and at least two more) <button>Add as a new artist</button></p>' +
    '<p class="status"></p>';
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const status = form.querySelector('.status');
    const files = [file, ...form.more.files];
    status.textContent = 'Adding ' + form.artist.value + ' from ' + files.length + ' paintings...';
    const images = await Promise.all(files.map(async (f) => ({name: f.name, b64: await base64(f)})));
    try {
      const response = await fetch('enroll', {method: 'POST',
        headers: {'Content-Type': 'application/json'},
        body: JSON.stringify({artist: form.artist.value, images: images})});
      const done = await response.json();
      status.textContent = done.message || ('Not added: ' + done.error);
    } catch (error) {
      status.textContent = 'Not added: ' + error;
    }
  });
  return form;
}
function handle(files) { for (const file of files) send(file); }
document.getElementById('files').addEventListener('change', (e) => handle(e.target.files));
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault(); drop.classList.remove('over'); handle(e.dataTransfer.files);
});
"""


def page_html(document: dict, *, allow_enroll: bool = False) -> str:
    """The page for the model whose metadata document is `document` (its title names the
    artists' count and the dataset); `allow_enroll`: offer "add as a new artist"."""
    dataset = (document.get("dataset") or {}).get("full_name", "")
    title = f"Who painted it? ({len(document.get('artists', []))} artists"
    title += f", {dataset})" if dataset else ")"
    script = f"const ALLOW_ENROLL = {'true' if allow_enroll else 'false'};\n{SCRIPT}"
    page = panel.page_html(title, FORM, script=script)
    return page.replace("</style>", STYLE + "</style>", 1)
