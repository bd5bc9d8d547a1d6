(function(){
  function key(td,type){var v=td.getAttribute('data-v');if(v===null)v=td.textContent;
    if(type==='num'){var n=parseFloat(v);return isNaN(n)?-Infinity:n;}return v.toLowerCase();}
  function sortBy(th){
    var table=th.closest('table'),tbody=table.tBodies[0];
    var idx=Array.prototype.indexOf.call(th.parentNode.children,th),type=th.getAttribute('data-sort');
    var dir=th.getAttribute('aria-sort')==='ascending'?-1:1;
    Array.prototype.forEach.call(th.parentNode.children,function(h){h.removeAttribute('aria-sort');});
    th.setAttribute('aria-sort',dir===1?'ascending':'descending');
    var rows=Array.prototype.slice.call(tbody.rows);
    rows.sort(function(a,b){var x=key(a.cells[idx],type),y=key(b.cells[idx],type);return (x<y?-1:x>y?1:0)*dir;});
    rows.forEach(function(r){tbody.appendChild(r);});
  }
  Array.prototype.forEach.call(document.querySelectorAll('table.sortable th[data-sort]'),function(th){
    th.tabIndex=0;
    th.addEventListener('click',function(){sortBy(th);});
    th.addEventListener('keydown',function(e){if(e.key==='Enter'||e.key===' '){e.preventDefault();sortBy(th);}});
  });
  function openHash(){var id=decodeURIComponent(location.hash.slice(1));if(!id)return;
    var el=document.getElementById(id);if(el&&el.tagName==='DETAILS'){el.open=true;}}
  window.addEventListener('hashchange',openHash);openHash();
})();
