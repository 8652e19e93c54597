
  // A token kept from earlier in this tab opens the page again; a refused one is forgotten.
  if ({{wrong}}) sessionStorage.removeItem({{key}});
  else if (sessionStorage.getItem({{key}}))
    location.replace({{path}} + "?token=" + encodeURIComponent(sessionStorage.getItem({{key}})));
