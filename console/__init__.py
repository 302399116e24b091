"""The operator console and the partner and customer portal, served by the gateway at ``/console``.

Pages are rendered on the server; every figure on them comes from the suite's own APIs, called
over HTTP with a token that stands for the logged-in person's party and role, so that each
person sees exactly what the APIs would show that party."""
