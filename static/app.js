// Shows the server's health on the placeholder page.
const el = document.getElementById("health");
fetch("/health")
  .then((r) => r.json())
  .then((body) => {
    const d = body.data;
    el.textContent = `Server ${d.status}, version ${d.version}, database ${d.database}.`;
  })
  .catch(() => {
    el.textContent = "The server did not answer.";
  });
