"+*"\
	8*B	ü€𝄞Rc-1bandroidj5.2.0*I"q"uote*
back\slashr3
	
/a/b?c=d&e=<f>*�"del u2028  u2029 *tab	hereR�
@非ASCII: déjà vu, Ελληνικά, русский, 日本語1emoji 😀👍🏽 flags 🇩🇪 zwj 👩‍💻

nl
cr

q"kv\1
üß
😀
U+FFFD �*8"slash / and </script>*ffff ￿ max 􏿿J
soh us