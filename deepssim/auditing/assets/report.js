/* The report's gallery: sort on a header click (score and class numeric, ids as text; ties
   keep the original order) and show the table's data-page rows at a time. Without JS the
   pager stays hidden and every row shows. */
(function(){
var t=document.getElementById("gallery");if(!t)return;
var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows),page=0,
 PAGE=Number(t.dataset.page)||rows.length||1;
var navs=document.querySelectorAll("nav.pager");
function show(){var n=Math.max(1,Math.ceil(rows.length/PAGE));page=Math.max(0,Math.min(page,n-1));
 rows.forEach(function(r,i){r.hidden=Math.floor(i/PAGE)!==page;});
 navs.forEach(function(nav){nav.hidden=n===1&&nav!==navs[0];
  nav.querySelector("span").textContent="page "+(page+1)+" of "+n+" ("+rows.length+" pairs)";
  nav.querySelectorAll("button").forEach(function(b){var to=page+Number(b.dataset.step);
   b.disabled=to<0||to>=n;b.onclick=function(){page=to;show();
    if(nav!==navs[0])navs[0].scrollIntoView();};});});}
t.querySelectorAll("th[data-sort]").forEach(function(th){th.onclick=function(){
 var key=th.dataset.sort,num=th.dataset.type==="num",
  dir=th.getAttribute("aria-sort")==="descending"?1:-1;
 if(!num&&!th.hasAttribute("aria-sort"))dir=1;
 t.querySelectorAll("th[data-sort]").forEach(function(o){o.removeAttribute("aria-sort");});
 th.setAttribute("aria-sort",dir>0?"ascending":"descending");
 rows.sort(function(a,b){var x=a.dataset[key],y=b.dataset[key],
  c=num?parseFloat(x)-parseFloat(y):x.localeCompare(y);
  return c*dir||a.dataset.i-b.dataset.i;});
 rows.forEach(function(r){body.appendChild(r);});page=0;show();};});
show();
})();
