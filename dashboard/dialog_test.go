package dashboard

import (
	"context"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

var pageDialogOpening = page.JavascriptDialogOpening

func acceptDialog(ctx context.Context) {
	chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
}
